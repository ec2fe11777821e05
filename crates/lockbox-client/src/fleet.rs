//! Which vault to talk to: the fleet manifest, fetched from a gateway and accepted only under the
//! fleet and witness keys the app pins (docs/fleet-manifest.md). The gateway is not trusted for
//! it; a rolled-back, forked, singly signed or expired manifest is refused with its own error.

use lockbox_proto::manifest::pb::ManifestsRequest;
use lockbox_proto::manifest::pb::fleet_client::FleetClient;
use lockbox_proto::manifest::{
    HighWater, MAX_SIGNED_MANIFEST_BYTES, Manifest, Pin, SignedManifest, VerifiedManifest,
};
use lockbox_vault_core::{VaultIdentity, partition_server_id};

use crate::{ClientError, VaultTarget};

/// Fetches the manifests after the device's mark `high` (and the one at it, which the device
/// re-verifies) from `gateway`, and accepts them under `pin` at `now_ms`. The caller persists
/// the returned [`VerifiedManifest::high_water`].
pub async fn update(
    gateway: &str,
    ca_pem: Option<&[u8]>,
    pin: &Pin,
    high: Option<&HighWater>,
    now_ms: u64,
) -> Result<VerifiedManifest, ClientError> {
    let channel = crate::endpoint(gateway, ca_pem)?.connect().await?;
    let mut rpc =
        FleetClient::new(channel).max_decoding_message_size(8 * MAX_SIGNED_MANIFEST_BYTES);
    let mut after = high.map_or(0, |h| h.sequence.saturating_sub(1));
    let mut chain = Vec::new();
    loop {
        let answer = rpc
            .manifests(ManifestsRequest {
                after_sequence: after,
            })
            .await?
            .into_inner();
        let got = answer.manifests.len();
        for bytes in answer.manifests {
            chain.push(SignedManifest::from_bytes(&bytes)?);
        }
        if got < lockbox_proto::manifest::MAX_PER_ANSWER || chain.len() > MAX_CHAIN {
            break;
        }
        after += got as u64;
    }
    Ok(pin.accept(high, &chain, now_ms)?)
}

/// More manifests than a device takes in one update (years of monthly renewals).
const MAX_CHAIN: usize = 4096;

/// The partition `manifest` assigns `account` to, reached through `endpoint` (a gateway).
pub fn target(manifest: &Manifest, account: &[u8], endpoint: &str) -> VaultTarget {
    let p = manifest.partition_for(account);
    VaultTarget {
        endpoint: endpoint.to_owned(),
        partition: p.partition,
        hpke_public_key: p.hpke_public_key.clone(),
        identity: VaultIdentity {
            server_id: partition_server_id(p.partition),
            public_key: p.opaque_server_public_key,
        },
    }
}
