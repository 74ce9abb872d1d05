//! Shared helpers for sealkv's criterion benches (the benches live in `benches/`).

/// A value of `size` bytes shaped like Baileys auth state: JSON with base64 key
/// material. Deterministic for a given `seed`.
pub fn auth_like_value(size: usize, seed: u64) -> Vec<u8> {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = Vec::with_capacity(size);
    let mut field = 0;
    while out.len() < size {
        out.extend_from_slice(
            format!("{{\"field{field}\":{{\"type\":\"Buffer\",\"data\":\"").as_bytes(),
        );
        for _ in 0..44 {
            out.push(B64[(next() % 64) as usize]);
        }
        out.extend_from_slice(b"\"}},");
        field += 1;
    }
    out.truncate(size);
    out
}
