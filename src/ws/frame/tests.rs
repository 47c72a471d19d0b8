use super::*;

#[test]
fn parses_short_medium_long_lengths() {
    for (len, hlen) in [(5u64, 2usize), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
        let mut h = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut h, true, opcode::BINARY, len, None);
        assert_eq!(n, hlen);
        let p = parse_header(&h[..n]).unwrap().unwrap();
        assert_eq!(
            (p.payload_len, p.header_len, p.opcode, p.fin),
            (len, hlen, 2, true)
        );
        assert_eq!(parse_header(&h[..n - 1]).unwrap(), None, "len {len}");
    }
}

#[test]
fn masked_header_round_trips() {
    let mut h = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut h, false, opcode::TEXT, 300, Some([1, 2, 3, 4]));
    let p = parse_header(&h[..n]).unwrap().unwrap();
    assert_eq!(p.mask, Some([1, 2, 3, 4]));
    assert!(!p.fin);
    assert_eq!(p.header_len, 8);
}

#[test]
fn rejects_bad_headers() {
    assert_eq!(parse_header(&[0xC1, 0x00]), Err(FrameError::ReservedBits));
    assert_eq!(
        parse_header(&[0x83, 0x00]),
        Err(FrameError::UnknownOpcode(3))
    );
    assert_eq!(
        parse_header(&[0x89, 126, 0, 200]),
        Err(FrameError::BadControlFrame)
    );
    assert_eq!(parse_header(&[0x09, 0]), Err(FrameError::BadControlFrame));
    let mut long = [0x82u8, 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(parse_header(&long), Err(FrameError::LengthOverflow));
    long[2] = 0;
    assert!(parse_header(&long).unwrap().is_some());
}

#[test]
fn mask_is_an_involution_at_any_offset() {
    let mask = [0xAA, 0x55, 0x0F, 0xF0];
    let orig: Vec<u8> = (0..37).collect();
    let mut data = orig.clone();
    apply_mask(&mut data[..10], mask, 0);
    apply_mask(&mut data[10..], mask, 10);
    assert_ne!(data, orig);
    apply_mask(&mut data, mask, 0);
    assert_eq!(data, orig);
}

#[test]
fn word_wise_mask_matches_the_rfc_definition() {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let orig: Vec<u8> = (0..100u8).map(|i| i.wrapping_mul(37)).collect();
    for offset in 0..9 {
        for len in 0..orig.len() {
            let mut fast = orig[..len].to_vec();
            apply_mask(&mut fast, mask, offset);
            let slow: Vec<u8> = orig[..len]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[(offset + i) % 4])
                .collect();
            assert_eq!(fast, slow, "offset {offset} len {len}");
        }
    }
}

#[test]
fn close_frame_truncates_reason_on_char_boundary() {
    let reason = "é".repeat(100);
    let f = close_frame(1001, &reason, None);
    let h = parse_header(&f).unwrap().unwrap();
    assert!(h.payload_len <= 125);
    let payload = &f[h.header_len..];
    assert_eq!(&payload[..2], &1001u16.to_be_bytes());
    assert!(std::str::from_utf8(&payload[2..]).is_ok());
}
