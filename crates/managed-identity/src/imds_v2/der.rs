//! A minimal DER writer: exactly what the IMDSv2 certificate signing request needs.

pub(crate) const INTEGER: u8 = 0x02;
pub(crate) const BIT_STRING: u8 = 0x03;
pub(crate) const NULL: u8 = 0x05;
pub(crate) const OID: u8 = 0x06;
pub(crate) const UTF8_STRING: u8 = 0x0c;
pub(crate) const IA5_STRING: u8 = 0x16;
pub(crate) const SEQUENCE: u8 = 0x30;
pub(crate) const SET: u8 = 0x31;

/// `[n]` constructed, context-specific (explicit tagging, or `IMPLICIT SET OF`).
pub(crate) const fn context(n: u8) -> u8 {
    0xa0 | n
}

/// Tag, definite length, contents.
pub(crate) fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(contents.len() + 6);
    out.push(tag);
    let len = contents.len();
    if len < 0x80 {
        // Fits in the short form.
        out.push(u8::try_from(len).unwrap_or_default());
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let significant = &bytes[skip..];
        out.push(0x80 | u8::try_from(significant.len()).unwrap_or_default());
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(contents);
    out
}

/// A constructed value of the concatenated parts.
pub(crate) fn constructed(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    tlv(tag, &parts.concat())
}

/// An OBJECT IDENTIFIER from its arcs (at least two; the first two combined).
pub(crate) fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = Vec::new();
    if let [first, second, rest @ ..] = arcs {
        base128(&mut body, first * 40 + second);
        for arc in rest {
            base128(&mut body, *arc);
        }
    }
    tlv(OID, &body)
}

fn base128(out: &mut Vec<u8>, mut value: u64) {
    let mut groups = [0u8; 10];
    let mut n = 0;
    loop {
        groups[n] = u8::try_from(value & 0x7f).unwrap_or_default();
        n += 1;
        value >>= 7;
        if value == 0 {
            break;
        }
    }
    for i in (0..n).rev() {
        let more = if i == 0 { 0 } else { 0x80 };
        out.push(groups[i] | more);
    }
}

/// A small non-negative INTEGER.
pub(crate) fn small_integer(value: u8) -> Vec<u8> {
    if value & 0x80 == 0 {
        tlv(INTEGER, &[value])
    } else {
        tlv(INTEGER, &[0, value])
    }
}

/// A BIT STRING of whole bytes.
pub(crate) fn bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut contents = Vec::with_capacity(bytes.len() + 1);
    contents.push(0);
    contents.extend_from_slice(bytes);
    tlv(BIT_STRING, &contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_encodings() {
        // sha256: 2.16.840.1.101.3.4.2.1
        assert_eq!(
            oid(&[2, 16, 840, 1, 101, 3, 4, 2, 1]),
            [0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01]
        );
        // 1.3.6.1.4.1.311.90.2.10
        assert_eq!(
            oid(&[1, 3, 6, 1, 4, 1, 311, 90, 2, 10]),
            [0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x5a, 0x02, 0x0a]
        );
        // domainComponent: 0.9.2342.19200300.100.1.25
        assert_eq!(
            oid(&[0, 9, 2342, 19_200_300, 100, 1, 25]),
            [0x06, 0x0a, 0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19]
        );
        assert_eq!(small_integer(32), [0x02, 0x01, 0x20]);
        assert_eq!(small_integer(0x80), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(tlv(SEQUENCE, &[0u8; 200])[..3], [0x30, 0x81, 200]);
        assert_eq!(tlv(SEQUENCE, &[0u8; 300])[..4], [0x30, 0x82, 0x01, 0x2c]);
        assert_eq!(bit_string(&[0xff]), [0x03, 0x02, 0x00, 0xff]);
    }
}
