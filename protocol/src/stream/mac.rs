//! The MAC chain: keyed BLAKE3 over a domain string, the previous MAC and the bytes it
//! covers. One place computes and compares MACs, so writer and reader cannot disagree.

use super::{FRAME_MAC_DOMAIN, HEADER_MAC_DOMAIN, MAC_LEN};

/// The header MAC over `MAGIC || version || body_len || body`.
pub(crate) fn header_mac(mac_key: &[u8; 32], header_bytes: &[u8]) -> [u8; MAC_LEN] {
    let mut h = blake3::Hasher::new_keyed(mac_key);
    h.update(HEADER_MAC_DOMAIN);
    h.update(header_bytes);
    *h.finalize().as_bytes()
}

/// A frame MAC over `previous MAC || frame head fields || payload`.
pub(crate) fn frame_mac(
    mac_key: &[u8; 32],
    previous: &[u8; MAC_LEN],
    head_and_payload: &[u8],
) -> [u8; MAC_LEN] {
    let mut h = blake3::Hasher::new_keyed(mac_key);
    h.update(FRAME_MAC_DOMAIN);
    h.update(previous);
    h.update(head_and_payload);
    *h.finalize().as_bytes()
}

/// Constant-time comparison of a computed MAC with received bytes.
pub(crate) fn mac_matches(computed: [u8; MAC_LEN], received: &[u8]) -> bool {
    blake3::Hash::from_bytes(computed) == *received
}
