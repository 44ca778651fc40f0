//! Frames of the previous on-disk format (format 1: crc only), as that
//! format wrote them: what `broker-admin migrate` converts, and what a
//! tenant could plant inside a record.

/// A format-1 frame of `tenant`, topic `events`, holding `rec` at `offset`.
pub fn v1_frame(tenant: &str, rec: &[u8], offset: u64) -> Vec<u8> {
    let mut body = Vec::new();
    for f in [tenant, "events", ""] {
        body.push(f.len() as u8);
        body.extend_from_slice(f.as_bytes());
    }
    let meta_len = body.len() as u16;
    body.extend_from_slice(&(rec.len() as u32).to_le_bytes());
    body.extend_from_slice(rec);
    let mut h = vec![0u8; 36];
    h[0..4].copy_from_slice(&0x3146_5257u32.to_le_bytes());
    h[4] = 1;
    h[6..8].copy_from_slice(&meta_len.to_le_bytes());
    h[8..12].copy_from_slice(&1u32.to_le_bytes());
    h[12..16].copy_from_slice(&(body.len() as u32).to_le_bytes());
    h[16..24].copy_from_slice(&offset.to_le_bytes());
    h[24..32].copy_from_slice(&1_700_000_000_000u64.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&body), &h[0..32]);
    h[32..36].copy_from_slice(&crc.to_le_bytes());
    h.extend_from_slice(&body);
    h
}
