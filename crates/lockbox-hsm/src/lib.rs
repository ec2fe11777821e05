//! Sealer trait: software sealer and PKCS#11 sealer.
