use super::*;
use crate::ws::frame::{build_frame, close_frame};

const MASK: [u8; 4] = [1, 2, 3, 4];

fn frame(fin: bool, op: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = build_frame(op, payload, mask);
    if !fin {
        f[0] &= 0x7f;
    }
    f
}

fn client(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
    frame(fin, op, payload, Some(MASK))
}

/// Decodes `stream` cut at `cuts`: every frame as "op fin payload".
fn decode(role: Role, stream: &[u8], cuts: &[usize]) -> Result<Vec<String>, DecodeError> {
    let mut d = Decoder::new(role);
    let mut out = Vec::new();
    let mut current: Option<(FrameHeader, Vec<u8>)> = None;
    let mut bounds = vec![0];
    bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c < stream.len()));
    bounds.push(stream.len());
    bounds.sort_unstable();
    bounds.dedup();
    for w in bounds.windows(2) {
        let mut chunk = stream[w[0]..w[1]].to_vec();
        let mut pos = 0;
        while let Some(e) = d.next(&mut chunk, &mut pos)? {
            match e {
                Event::Header(h) => current = Some((h, Vec::new())),
                Event::Payload { start, end } => current
                    .as_mut()
                    .unwrap()
                    .1
                    .extend_from_slice(&chunk[start..end]),
                Event::End => {
                    let (h, p) = current.take().unwrap();
                    out.push(format!("{} {} {}", h.opcode, h.fin, p.len()));
                    if p.len() < 32 {
                        out.push(String::from_utf8_lossy(&p).into_owned());
                    } else {
                        assert!(p.iter().enumerate().all(|(i, b)| *b == (i * 7) as u8));
                    }
                }
            }
        }
    }
    assert!(current.is_none() || !d.at_frame_boundary());
    Ok(out)
}

#[test]
fn frames_survive_every_split() {
    let big: Vec<u8> = (0..70_000usize).map(|i| (i * 7) as u8).collect();
    let mut stream = client(true, opcode::BINARY, b"hello ");
    stream.extend(client(false, opcode::TEXT, b"frag"));
    stream.extend(client(true, opcode::PING, b"p!"));
    stream.extend(client(false, opcode::CONTINUATION, b""));
    stream.extend(client(true, opcode::CONTINUATION, b"ed "));
    stream.extend(client(true, opcode::BINARY, &big));
    stream.extend(client(true, opcode::PONG, b""));
    stream.extend(client(true, opcode::CLOSE, &1000u16.to_be_bytes()));
    let want = decode(Role::FromClient, &stream, &[]).unwrap();
    assert_eq!(want.len(), 15);
    assert_eq!(want[2..6], ["1 false 4", "frag", "9 true 2", "p!"]);
    for cut in (0..stream.len()).step_by(97).chain(0..40) {
        let got = decode(Role::FromClient, &stream, &[cut, cut + 1, cut + 3]).unwrap();
        assert_eq!(got, want, "cut {cut}");
    }
}

#[test]
fn roles_judge_masks_and_message_order() {
    let unmasked = build_frame(opcode::BINARY, b"x", None);
    assert_eq!(
        decode(Role::FromClient, &unmasked, &[]),
        Err(DecodeError::Unmasked)
    );
    assert!(decode(Role::FromServer, &unmasked, &[]).is_ok());
    let masked = client(true, opcode::BINARY, b"x");
    assert_eq!(
        decode(Role::FromServer, &masked, &[]),
        Err(DecodeError::Masked)
    );
    let stray = client(true, opcode::CONTINUATION, b"x");
    assert_eq!(
        decode(Role::FromClient, &stray, &[]),
        Err(DecodeError::StrayContinuation)
    );
    let mut nested = client(false, opcode::BINARY, b"a");
    nested.extend(client(true, opcode::TEXT, b"b"));
    assert_eq!(
        decode(Role::FromClient, &nested, &[]),
        Err(DecodeError::NestedMessage)
    );
    let mut rsv = client(true, opcode::BINARY, b"x");
    rsv[0] |= 0x40;
    assert!(matches!(
        decode(Role::FromClient, &rsv, &[]),
        Err(DecodeError::Frame(FrameError::ReservedBits))
    ));
    // After an error the decoder stays quiet.
    let mut d = Decoder::new(Role::FromClient);
    let mut bad = unmasked.clone();
    assert!(d.next(&mut bad, &mut 0).is_err());
    let mut good = masked.clone();
    assert_eq!(d.next(&mut good, &mut 0), Ok(None));
}

#[test]
fn passthrough_follows_boundaries_byte_by_byte() {
    let frames = [
        build_frame(opcode::TEXT, b"hello", Some([9, 8, 7, 6])),
        build_frame(opcode::BINARY, &[0u8; 70_000], None),
        // Order is the peers' business: a stray continuation still parses.
        build_frame(opcode::CONTINUATION, b"x", None),
        close_frame(1000, "bye", Some([1, 1, 1, 1])),
    ];
    let all = frames.concat();
    let original = all.clone();
    let mut t = Decoder::passthrough();
    let mut ends = vec![];
    let mut pos = 0;
    for f in &frames {
        pos += f.len();
        ends.push(pos);
    }
    for (i, b) in all.iter().enumerate() {
        t.observe(std::slice::from_ref(b));
        assert_eq!(t.at_frame_boundary(), ends.contains(&(i + 1)), "byte {i}");
    }
    assert!(t.saw_close());
    assert_eq!(all, original);
}

#[test]
fn passthrough_in_large_chunks_and_loss() {
    let mut t = Decoder::passthrough();
    let mut data = build_frame(opcode::TEXT, b"a", None);
    data.extend(build_frame(opcode::PING, b"p", None));
    t.observe(&data);
    assert!(t.at_frame_boundary());
    assert!(!t.saw_close());
    t.observe(&[0xF1, 0x00]);
    assert!(!t.at_frame_boundary(), "garbage must stop injection");
    let mut deflate = Decoder::passthrough().allowing_reserved_bits();
    deflate.observe(&[0xC1, 0x01, b'z']);
    assert!(deflate.at_frame_boundary());
}
