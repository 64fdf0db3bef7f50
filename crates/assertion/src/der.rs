//! A minimal DER reader and writer: exactly what the key formats (PKCS#8, PKCS#1, SEC1), public
//! keys and ECDSA signatures need. Only single-byte tags and definite lengths up to 4 bytes.

use zeroize::Zeroizing;

pub(crate) const INTEGER: u8 = 0x02;
pub(crate) const BIT_STRING: u8 = 0x03;
pub(crate) const OCTET_STRING: u8 = 0x04;
pub(crate) const NULL: u8 = 0x05;
pub(crate) const OID: u8 = 0x06;
pub(crate) const SEQUENCE: u8 = 0x30;
/// `[0]` constructed (explicit context tag 0).
pub(crate) const CONTEXT_0: u8 = 0xA0;

/// Reads consecutive TLVs from a byte slice.
#[derive(Clone, Copy)]
pub(crate) struct Reader<'a> {
    input: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(input: &'a [u8]) -> Self {
        Self { input }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.input.is_empty()
    }

    /// The tag of the next TLV, without consuming it.
    pub(crate) fn peek_tag(&self) -> Option<u8> {
        self.input.first().copied()
    }

    /// The next TLV as (tag, value); `None` when malformed or at the end.
    pub(crate) fn read(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.input.split_first()?;
        if tag & 0x1f == 0x1f {
            return None; // high tag numbers are never used by the structures we read
        }
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return None; // indefinite or absurd lengths
            }
            let (len_bytes, after) = rest.split_at(count);
            rest = after;
            let len = len_bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            if len < 0x80 || len_bytes.first() == Some(&0) {
                return None; // not the minimal (DER) length encoding
            }
            len
        };
        if rest.len() < len {
            return None;
        }
        let (value, after) = rest.split_at(len);
        self.input = after;
        Some((tag, value))
    }

    /// The value of the next TLV if it has `tag`.
    pub(crate) fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        match self.read()? {
            (actual, value) if actual == tag => Some(value),
            _ => None,
        }
    }

    /// The value of the next TLV if it has `tag`; nothing is consumed otherwise.
    pub(crate) fn optional(&mut self, tag: u8) -> Option<&'a [u8]> {
        if self.peek_tag() == Some(tag) {
            self.expect(tag)
        } else {
            None
        }
    }
}

/// Parses `input` as exactly one TLV with `tag` and returns its value.
pub(crate) fn single(input: &[u8], tag: u8) -> Option<&[u8]> {
    let mut reader = Reader::new(input);
    let value = reader.expect(tag)?;
    reader.is_empty().then_some(value)
}

/// An unsigned big-endian integer's magnitude: the INTEGER's bytes without leading zeros.
/// `None` for negative numbers.
pub(crate) fn unsigned(integer: &[u8]) -> Option<&[u8]> {
    if integer.first().is_some_and(|b| b & 0x80 != 0) {
        return None;
    }
    let start = integer
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(integer.len());
    Some(&integer[start..])
}

/// The small non-negative integer value of an INTEGER of at most one byte.
pub(crate) fn small_integer(integer: &[u8]) -> Option<u8> {
    match integer {
        [value] if value & 0x80 == 0 => Some(*value),
        _ => None,
    }
}

/// The number of bytes a TLV with a `len`-byte value takes.
pub(crate) fn tlv_len(len: usize) -> usize {
    1 + length_len(len) + len
}

fn length_len(len: usize) -> usize {
    if len < 0x80 {
        1
    } else {
        1 + (usize::BITS - len.leading_zeros()).div_ceil(8) as usize
    }
}

/// Appends a TLV (tag, DER length, value).
pub(crate) fn write(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    write_header(out, tag, value.len());
    out.extend_from_slice(value);
}

/// Appends a tag and a DER length.
pub(crate) fn write_header(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    if len < 0x80 {
        // Checked just above: fits in 7 bits.
        out.push(u8::try_from(len).unwrap_or(0));
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let count = bytes.len() - skip;
        out.push(0x80 | u8::try_from(count).unwrap_or(0));
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// `SEQUENCE { INTEGER 0, algorithm_identifier, OCTET STRING { private_key } }`: a PKCS#8 v1
/// `PrivateKeyInfo`, written into a buffer sized exactly so it is never reallocated (a
/// reallocation would leave an unzeroized copy of the key behind).
pub(crate) fn pkcs8_v1(algorithm_identifier: &[u8], private_key: &[u8]) -> Zeroizing<Vec<u8>> {
    const VERSION_0: [u8; 3] = [INTEGER, 0x01, 0x00];
    let content_len = VERSION_0.len() + algorithm_identifier.len() + tlv_len(private_key.len());
    let mut out = Zeroizing::new(Vec::with_capacity(tlv_len(content_len)));
    write_header(&mut out, SEQUENCE, content_len);
    out.extend_from_slice(&VERSION_0);
    out.extend_from_slice(algorithm_identifier);
    write(&mut out, OCTET_STRING, private_key);
    out
}

/// Converts an ASN.1 DER ECDSA signature (`SEQUENCE { r INTEGER, s INTEGER }`) to the fixed
/// `r‖s` form of JWS (RFC 7518 §3.4), each scalar left-padded to `scalar_len` bytes.
pub(crate) fn ecdsa_der_to_fixed(signature: &[u8], scalar_len: usize) -> Option<Vec<u8>> {
    let mut reader = Reader::new(single(signature, SEQUENCE)?);
    let r = unsigned(reader.expect(INTEGER)?)?;
    let s = unsigned(reader.expect(INTEGER)?)?;
    if !reader.is_empty() || r.is_empty() || s.is_empty() {
        return None;
    }
    if r.len() > scalar_len || s.len() > scalar_len {
        return None;
    }
    let mut out = vec![0u8; 2 * scalar_len];
    out[scalar_len - r.len()..scalar_len].copy_from_slice(r);
    out[2 * scalar_len - s.len()..].copy_from_slice(s);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write(&mut out, tag, value);
        out
    }

    #[test]
    fn lengths_round_trip() {
        for len in [0usize, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x1_0000] {
            let value = vec![7u8; len];
            let encoded = tlv(OCTET_STRING, &value);
            assert_eq!(encoded.len(), tlv_len(len), "len {len}");
            assert_eq!(single(&encoded, OCTET_STRING), Some(value.as_slice()));
        }
    }

    #[test]
    fn rejects_malformed_lengths() {
        // Indefinite length, non-minimal long form, truncated value, high tag number.
        assert_eq!(Reader::new(&[0x30, 0x80, 0, 0]).read(), None);
        assert_eq!(Reader::new(&[0x04, 0x81, 0x05, 1, 2, 3, 4, 5]).read(), None);
        assert_eq!(Reader::new(&[0x04, 0x82, 0x00, 0x80]).read(), None);
        assert_eq!(Reader::new(&[0x04, 0x03, 1, 2]).read(), None);
        assert_eq!(Reader::new(&[0x1f, 0x01, 0x00]).read(), None);
        assert_eq!(single(&[0x04, 0x01, 0x00, 0x00], OCTET_STRING), None);
    }

    #[test]
    fn unsigned_strips_sign_padding_and_rejects_negatives() {
        assert_eq!(unsigned(&[0x00, 0x80, 0x01]), Some(&[0x80, 0x01][..]));
        assert_eq!(unsigned(&[0x00]), Some(&[][..]));
        assert_eq!(unsigned(&[0x80]), None);
        assert_eq!(small_integer(&[0x01]), Some(1));
        assert_eq!(small_integer(&[0x00, 0x01]), None);
    }

    fn der_signature(r: &[u8], s: &[u8]) -> Vec<u8> {
        let mut body = tlv(INTEGER, r);
        body.extend(tlv(INTEGER, s));
        tlv(SEQUENCE, &body)
    }

    #[test]
    fn ecdsa_signature_to_fixed_pads_and_strips() {
        // r with a sign byte (33 bytes on the wire), s short (needs left padding).
        let mut r = vec![0x00, 0x80];
        r.extend([0x11; 31]);
        let s = vec![0x01, 0x02];
        let fixed = ecdsa_der_to_fixed(&der_signature(&r, &s), 32).unwrap();
        assert_eq!(fixed.len(), 64);
        assert_eq!(&fixed[..32], &r[1..]);
        assert_eq!(&fixed[32..62], &[0u8; 30]);
        assert_eq!(&fixed[62..], &[0x01, 0x02]);
    }

    #[test]
    fn ecdsa_signature_to_fixed_rejects_bad_input() {
        assert_eq!(
            ecdsa_der_to_fixed(&der_signature(&[0x01; 33], &[1]), 32),
            None
        );
        assert_eq!(ecdsa_der_to_fixed(&der_signature(&[0x80], &[1]), 32), None);
        assert_eq!(ecdsa_der_to_fixed(&der_signature(&[0x00], &[1]), 32), None);
        let mut trailing = der_signature(&[1], &[1]);
        trailing.push(0);
        assert_eq!(ecdsa_der_to_fixed(&trailing, 32), None);
        assert_eq!(ecdsa_der_to_fixed(&[], 32), None);
    }

    #[test]
    fn pkcs8_wrapper_is_exactly_sized() {
        let algorithm = tlv(SEQUENCE, &tlv(OID, &[0x2a, 0x03]));
        let key = vec![0x42; 300];
        let out = pkcs8_v1(&algorithm, &key);
        assert_eq!(out.len(), out.capacity());
        let mut reader = Reader::new(single(&out, SEQUENCE).unwrap());
        assert_eq!(reader.expect(INTEGER), Some(&[0u8][..]));
        assert_eq!(reader.expect(SEQUENCE), Some(&algorithm[2..]));
        assert_eq!(reader.expect(OCTET_STRING), Some(key.as_slice()));
        assert!(reader.is_empty());
    }
}
