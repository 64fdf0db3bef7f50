//! A minimal DER reader: one tag-length-value at a time (single-byte tags, definite lengths).

/// `SEQUENCE`.
pub(crate) const SEQUENCE: u8 = 0x30;
/// `SET`.
pub(crate) const SET: u8 = 0x31;
/// `OBJECT IDENTIFIER`.
pub(crate) const OID: u8 = 0x06;
/// `UTF8String`.
pub(crate) const UTF8_STRING: u8 = 0x0c;

/// The tag of a constructed context-specific `[n]`.
pub(crate) const fn context_constructed(n: u8) -> u8 {
    0xa0 | n
}

/// One element: its tag and contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tlv<'a> {
    pub(crate) tag: u8,
    pub(crate) contents: &'a [u8],
}

/// Reads the first element of `input`; returns it and what follows it.
pub(crate) fn read(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), String> {
    let (&tag, rest) = input.split_first().ok_or("unexpected end of data")?;
    if tag & 0x1f == 0x1f {
        return Err("multi-byte tags are not supported".to_owned());
    }
    let (&first, rest) = rest.split_first().ok_or("no length")?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 {
            return Err("indefinite lengths are not DER".to_owned());
        }
        if count > 4 || rest.len() < count {
            return Err("a length is too long".to_owned());
        }
        let (bytes, rest) = rest.split_at(count);
        if bytes[0] == 0 || (count == 1 && bytes[0] < 0x80) {
            return Err("a length is not in its shortest form".to_owned());
        }
        let length = bytes
            .iter()
            .fold(0_usize, |acc, b| (acc << 8) | usize::from(*b));
        (length, rest)
    };
    if rest.len() < length {
        return Err("an element runs past the end of the data".to_owned());
    }
    let (contents, rest) = rest.split_at(length);
    Ok((Tlv { tag, contents }, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_lengths() {
        let (tlv, rest) = read(&[0x04, 0x02, 0xaa, 0xbb, 0x05]).unwrap();
        assert_eq!(tlv.tag, 0x04);
        assert_eq!(tlv.contents, &[0xaa, 0xbb]);
        assert_eq!(rest, &[0x05]);
        let mut long = vec![0x30, 0x81, 0x80];
        long.extend(std::iter::repeat_n(0, 0x80));
        let (tlv, rest) = read(&long).unwrap();
        assert_eq!(tlv.contents.len(), 0x80);
        assert!(rest.is_empty());
    }

    #[test]
    fn refusals() {
        assert!(read(&[]).is_err());
        assert!(read(&[0x30]).is_err());
        assert!(read(&[0x30, 0x80]).is_err());
        assert!(read(&[0x30, 0x81, 0x05, 0, 0, 0, 0, 0]).is_err());
        assert!(read(&[0x30, 0x03, 0x00]).is_err());
        assert!(read(&[0x1f, 0x01, 0x00]).is_err());
    }
}
