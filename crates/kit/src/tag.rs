//! Pool tags as the kit's scenarios write them and as PoolMon shows them.

/// Parse a scenario tag string: up to four characters padded with spaces,
/// `\xNN` escapes allowed.
pub fn tag_value(s: &str) -> u32 {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 3 < b.len() {
            let h = std::str::from_utf8(&b[i + 2..i + 4]).expect("ascii");
            out.push(u8::from_str_radix(h, 16).expect("hex escape"));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    assert!(
        !out.is_empty() && out.len() <= 4,
        "tag {s:?} must be 1-4 bytes"
    );
    out.resize(4, b' ');
    u32::from_le_bytes([out[0], out[1], out[2], out[3]])
}

/// Display a tag value as PoolMon does (escaping non-printables like
/// pooldump-core's PoolTag).
pub fn tag_string(v: u32) -> String {
    let mut s = String::new();
    for b in v.to_le_bytes() {
        if (0x20..0x7F).contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}
