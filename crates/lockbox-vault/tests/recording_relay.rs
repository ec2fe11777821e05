//! A gateway that records every byte it relays, both ways, while a device enrolls and recovers
//! through it: none of the secrets, and none of the OPAQUE messages, may appear in what it saw.

mod common;

use common::{KSF, TestNode, new_key};
use lockbox_client::{VaultClient, open_response};
use lockbox_proto::pb::vault_server::{Vault, VaultServer};
use lockbox_proto::pb::{self, request::Op, response::Result as Reply};
use lockbox_vault_core::client::{ClientEnrollment, ClientRecovery};
use lockbox_vault_core::{AccountId, AttemptLimit};
use prost::Message;
use rand_core::OsRng;
use std::sync::{Arc, Mutex};
use tonic::transport::Channel;

const ACCOUNT: &[u8] = b"+15550004444";
const PASSWORD: &[u8] = b"correct horse battery staple";

/// Relays to the node and keeps a copy of every message on the wire.
struct Recorder {
    upstream: pb::vault_client::VaultClient<Channel>,
    wire: Arc<Mutex<Vec<Vec<u8>>>>,
}

#[tonic::async_trait]
impl Vault for Recorder {
    async fn call(
        &self,
        request: tonic::Request<pb::SealedRequest>,
    ) -> Result<tonic::Response<pb::SealedResponse>, tonic::Status> {
        let sealed = request.into_inner();
        self.wire.lock().unwrap().push(sealed.encode_to_vec());
        let answer = self.upstream.clone().call(sealed).await?.into_inner();
        self.wire.lock().unwrap().push(answer.encode_to_vec());
        Ok(tonic::Response::new(answer))
    }

    async fn info(
        &self,
        request: tonic::Request<pb::InfoRequest>,
    ) -> Result<tonic::Response<pb::InfoResponse>, tonic::Status> {
        self.upstream.clone().info(request.into_inner()).await
    }
}

async fn start_recorder(node: &TestNode) -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let wire = Arc::new(Mutex::new(Vec::new()));
    let recorder = Recorder {
        upstream: pb::vault_client::VaultClient::connect(node.endpoint())
            .await
            .unwrap(),
        wire: Arc::clone(&wire),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(VaultServer::new(recorder))
            .serve_with_incoming(incoming),
    );
    (format!("http://{addr}"), wire)
}

/// Sends `op` through the relay and returns what the device opened; every byte field of both
/// plaintexts (OPAQUE messages, wrapped keys, session ids) becomes a needle.
async fn exchange(c: &VaultClient, op: Op, needles: &mut Vec<Vec<u8>>) -> Reply {
    let request = c.request(ACCOUNT, op);
    collect_fields(&request.op.clone().unwrap(), needles);
    let response = c.call_raw(ACCOUNT, request).await.unwrap();
    let reply = response.result.unwrap();
    collect_reply(&reply, needles);
    reply
}

fn collect_fields(op: &Op, out: &mut Vec<Vec<u8>>) {
    let fields: Vec<&[u8]> = match op {
        Op::RegisterStart(r) => vec![&r.registration_request],
        Op::RegisterFinish(r) => vec![
            &r.session,
            &r.registration_upload,
            &r.wrapped_key,
            &r.catalog_key,
        ],
        Op::LoginStart(r) => vec![&r.ke1],
        Op::LoginFinish(r) => vec![&r.session, &r.ke3],
        Op::ChangePasswordStart(r) => vec![&r.session, &r.registration_request],
        Op::Delete(r) => vec![&r.session],
        Op::Status(_) => vec![],
        Op::PinCatalog(r) => vec![&r.pin],
    };
    out.extend(fields.into_iter().map(<[u8]>::to_vec));
}

fn collect_reply(reply: &Reply, out: &mut Vec<Vec<u8>>) {
    let fields: Vec<&[u8]> = match reply {
        Reply::RegisterStarted(r) => vec![&r.session, &r.registration_response],
        Reply::LoginStarted(r) => vec![&r.session, &r.ke2],
        Reply::LoginOk(r) => vec![&r.sealed_wrapped_key, &r.session, &r.catalog_pin],
        Reply::Pinned(r) => vec![&r.pin],
        _ => vec![],
    };
    out.extend(fields.into_iter().map(<[u8]>::to_vec));
}

#[tokio::test]
async fn the_relay_sees_no_secret_and_no_opaque_message() {
    let node = TestNode::start().await;
    let (relay, wire) = start_recorder(&node).await;
    let mut target = node.client().await.target().clone();
    target.endpoint = relay;
    let c = VaultClient::connect(target)
        .await
        .unwrap()
        .with_token_source(node.tokens());
    let id = AccountId::new(ACCOUNT).unwrap();
    let vault = c.target().identity.clone();
    let key = new_key();
    let mut needles: Vec<Vec<u8>> = Vec::new();

    // Enrollment, step by step, so the test knows every plaintext.
    let (request, enrollment) =
        ClientEnrollment::start(PASSWORD, id.clone(), vault.clone(), &mut OsRng).unwrap();
    let op = Op::RegisterStart(pb::RegisterStart {
        registration_request: request.into(),
    });
    let Reply::RegisterStarted(started) = exchange(&c, op, &mut needles).await else {
        panic!("expected RegisterStarted");
    };
    let limit = AttemptLimit::new(5).unwrap();
    let upload = enrollment
        .finish(&started.registration_response, &key, limit, KSF, &mut OsRng)
        .unwrap();
    let op = Op::RegisterFinish(pb::RegisterFinish {
        session: started.session,
        registration_upload: upload.upload.into(),
        wrapped_key: upload.wrapped_key.into(),
        attempt_limit: 5,
        ksf: Some(pb::KsfParams {
            m_cost_kib: KSF.m_cost_kib(),
            t_cost: KSF.t_cost(),
            p_cost: KSF.p_cost(),
        }),
        catalog_key: upload.catalog_key.as_bytes().to_vec().into(),
    });
    assert!(matches!(
        exchange(&c, op, &mut needles).await,
        Reply::Done(_)
    ));

    // A login, step by step.
    let (ke1, recovery) = ClientRecovery::start(PASSWORD, id, vault, &mut OsRng).unwrap();
    let op = Op::LoginStart(pb::LoginStart { ke1: ke1.into() });
    let Reply::LoginStarted(started) = exchange(&c, op, &mut needles).await else {
        panic!("expected KE2");
    };
    let (ke3, opening) = recovery.finish(&started.ke2, KSF, &mut OsRng).unwrap();
    let op = Op::LoginFinish(pb::LoginFinish {
        session: started.session,
        ke3: ke3.into(),
    });
    let Reply::LoginOk(ok) = exchange(&c, op, &mut needles).await else {
        panic!("expected LoginOk");
    };
    assert_eq!(opening.open(&ok.sealed_wrapped_key).unwrap(), key);

    // And the library's own flows: a wrong password, a password change, a status.
    assert!(c.recover(ACCOUNT, b"wrong guess").await.is_err());
    c.change_password(ACCOUNT, PASSWORD, b"new password 2", KSF)
        .await
        .unwrap();
    assert_eq!(c.status(ACCOUNT).await.unwrap().attempts(), Some((5, 5)));
    // A catalog pin travels sealed too (the relay must not learn the repository id).
    let pin = c.pin_catalog(ACCOUNT, &key, 1, [0x5C; 64]).await.unwrap();
    assert_eq!(pin.sequence(), 1);
    needles.push(pin.encode().to_vec());

    let code = key.recovery_code().to_grouped();
    let code_hex = code.replace(' ', "");
    let secrets: [(&str, &[u8]); 5] = [
        ("K", key.expose()),
        ("password", PASSWORD),
        ("new password", b"new password 2"),
        ("recovery code", code.as_bytes()),
        ("recovery code hex", code_hex.as_bytes()),
    ];
    let wire = wire.lock().unwrap();
    assert!(wire.len() >= 2 * 9, "recorded {} messages", wire.len());
    assert!(needles.len() >= 10, "{} plaintext fields", needles.len());
    for bytes in wire.iter() {
        for (what, secret) in secrets {
            assert!(!contains(bytes, secret), "{what} crossed the relay");
        }
        for needle in &needles {
            assert!(
                needle.len() < 16 || !contains(bytes, &needle[..16]),
                "a plaintext protocol field ({} bytes) crossed the relay",
                needle.len()
            );
        }
    }
    // Sanity: the check finds what is there (the account id travels in the clear, as designed).
    assert!(wire.iter().any(|b| contains(b, ACCOUNT)));
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn the_device_detects_a_relay_that_answers_for_the_vault() {
    let node = TestNode::start().await;
    let c = node.client().await;
    c.enroll(ACCOUNT, PASSWORD, &new_key(), 5, KSF)
        .await
        .unwrap();
    // The relay swaps the answers of two requests: each opens only under its own request's key.
    let status = c.request(ACCOUNT, Op::Status(pb::Status {}));
    let (first, first_wait) = c.seal(ACCOUNT, &status, &mut OsRng).unwrap();
    let status = c.request(ACCOUNT, Op::Status(pb::Status {}));
    let (second, second_wait) = c.seal(ACCOUNT, &status, &mut OsRng).unwrap();
    let first_answer = c.send_sealed(first).await.unwrap();
    let second_answer = c.send_sealed(second).await.unwrap();
    assert!(open_response(first_wait, &second_answer).is_err());
    assert!(open_response(second_wait, &first_answer).is_err());
}
