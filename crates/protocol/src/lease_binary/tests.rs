use super::*;

fn head(lane: &str, from: u64, to: u64) -> LeaseHead {
    LeaseHead {
        id: "0-1-abc".into(),
        destination: "d".into(),
        lane: lane.into(),
        from_offset: from,
        to_offset: to,
        lease_ms: 30_000,
        probe: false,
        redeliveries: 2,
    }
}

/// Records whose bytes try to pass for the format's own structure.
fn hostile_payloads() -> Vec<Vec<u8>> {
    vec![
        b"{\"a\":1}".to_vec(),
        b"".to_vec(),
        b"two\nlines\n".to_vec(),
        b"\n".to_vec(),
        MAGIC.to_vec(),
        vec![0xff, 0x00, b'\n', 0x80],
        b"{\"payload_b64\":\"AA==\"}".to_vec(),
    ]
}

fn encoded() -> (Vec<u8>, Vec<Vec<u8>>) {
    let payloads = hostile_payloads();
    let mut enc = Encoder::with_capacity(payloads.len(), 64);
    for (i, p) in payloads.iter().enumerate() {
        let tenant = if i % 2 == 0 { "acme" } else { "globex" };
        enc.push(10 + 2 * i as u64, 1_000 + i as u64, tenant, "events", p);
    }
    (enc.finish(head("normal/0", 10, 30)), payloads)
}

#[test]
fn a_lease_round_trips_with_every_payload_exactly_as_pushed() {
    let (body, payloads) = encoded();
    let d = decode(Bytes::from(body)).expect("decodes");
    assert_eq!((d.idle, d.retry_after_ms), (None, 0));
    let lease = d.lease.expect("a lease");
    assert_eq!(lease.head, head("normal/0", 10, 30));
    assert_eq!(lease.tenants, ["acme", "globex"], "each name once");
    assert_eq!(lease.topics, ["events"]);
    assert_eq!(lease.records.len(), payloads.len(), "a payload with newlines stays one record");
    for (i, (r, p)) in lease.records.iter().zip(&payloads).enumerate() {
        assert_eq!(&r.payload[..], &p[..], "record {i}");
        assert_eq!((r.offset, r.ts_ms, r.tenant, r.topic), (10 + 2 * i as u64, 1_000 + i as u64, (i % 2) as u32, 0));
    }
}

#[test]
fn an_idle_answer_round_trips() {
    let d = decode(Bytes::from(encode_idle(Some(IdleReason::BreakerOpen), 1234))).expect("decodes");
    assert_eq!(d, Decoded { lease: None, idle: Some(IdleReason::BreakerOpen), retry_after_ms: 1234 });
}

#[test]
fn every_truncation_and_every_extension_is_refused_never_misread() {
    let (body, _) = encoded();
    for cut in 0..body.len() {
        assert!(decode(Bytes::copy_from_slice(&body[..cut])).is_err(), "a body cut at {cut} decoded");
    }
    let mut longer = body.clone();
    longer.extend_from_slice(b"{\"x\":1}\n");
    assert_eq!(decode(Bytes::from(longer)), Err(LeaseFormatError::Trailing(8)));
}

#[test]
fn a_wrong_separator_bad_indices_and_foreign_offsets_are_refused() {
    let (body, _) = encoded();
    let mut sep = body.clone();
    let last = sep.len() - 1;
    sep[last] = b'x';
    assert!(matches!(decode(Bytes::from(sep)), Err(LeaseFormatError::Record { .. })));

    let mut enc = Encoder::default();
    enc.push(5, 0, "t", "e", b"{}");
    let outside = enc.finish(head("normal/0", 10, 30));
    assert!(matches!(decode(Bytes::from(outside)), Err(LeaseFormatError::Record { index: 0, .. })));

    let mut enc = Encoder::default();
    enc.push(12, 0, "t", "e", b"{}");
    enc.push(11, 0, "t", "e", b"{}");
    let backwards = enc.finish(head("high/1", 10, 30));
    assert!(matches!(decode(Bytes::from(backwards)), Err(LeaseFormatError::Record { index: 1, .. })));

    // Re-drive leases mix lanes: any offsets, in any order.
    let mut enc = Encoder::default();
    enc.push(12, 0, "t", "e", b"{}");
    enc.push(3, 0, "t", "e", b"{}");
    let redrive = enc.finish(head(DEAD_LETTERS_LANE, 0, 0));
    assert_eq!(decode(Bytes::from(redrive)).expect("decodes").lease.expect("lease").records.len(), 2);

    let bad_index = body_with(|h| {
        if let Some(l) = &mut h.lease {
            l.records[0].tenant = 7;
        }
    });
    assert!(matches!(decode(Bytes::from(bad_index)), Err(LeaseFormatError::Record { index: 0, .. })));
    let bad_len = body_with(|h| {
        if let Some(l) = &mut h.lease {
            l.records[0].len = u32::MAX;
        }
    });
    assert!(matches!(decode(Bytes::from(bad_len)), Err(LeaseFormatError::Record { index: 0, .. })));
}

/// The encoded body with its header changed by `edit`.
fn body_with(edit: impl FnOnce(&mut Header)) -> Vec<u8> {
    let (body, _) = encoded();
    let n = u32::from_le_bytes([body[4], body[5], body[6], body[7]]) as usize;
    let (mut h, _): (Header, usize) =
        bincode::serde::decode_from_slice(&body[8..8 + n], bincode::config::standard()).expect("header");
    edit(&mut h);
    let payloads = &body[8 + n..];
    super::body(MAGIC, &h, payloads)
}

#[test]
fn random_and_mutated_bodies_never_panic_and_never_yield_bytes_outside_the_body() {
    let (body, _) = encoded();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..20_000 {
        let mut b = body.clone();
        for _ in 0..(next() % 4 + 1) {
            let at = (next() as usize) % b.len();
            b[at] = next() as u8;
        }
        if let Ok(d) = decode(Bytes::from(b.clone())) {
            let total: usize = d.lease.iter().flat_map(|l| &l.records).map(|r| r.payload.len() + 1).sum();
            assert!(total <= b.len(), "payloads longer than the body");
        }
    }
    for len in 0..64 {
        let junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let _ = decode(Bytes::from(junk));
    }
}

#[test]
fn a_v1_answer_converts_with_its_payloads_decoded() {
    let v1 = AcquireResponse {
        lease: Some(crate::lease::Lease {
            head: LeaseHead {
                id: "i".into(),
                destination: "d".into(),
                lane: "low/3".into(),
                from_offset: 0,
                to_offset: 2,
                lease_ms: 1000,
                probe: true,
                redeliveries: 0,
            },
            broker_id: "b1".into(),
            records: vec![
                crate::lease::LeasedRecord {
                    lane: None,
                    offset: 0,
                    tenant: "a".into(),
                    topic: "e".into(),
                    ts_ms: 5,
                    payload_b64: crate::b64_encode(b"x\ny"),
                },
                crate::lease::LeasedRecord {
                    lane: None,
                    offset: 1,
                    tenant: "a".into(),
                    topic: "e".into(),
                    ts_ms: 6,
                    payload_b64: "!!".into(),
                },
            ],
        }),
        idle: None,
        retry_after_ms: 0,
    };
    let lease = Decoded::from(v1).lease.expect("lease");
    assert!(lease.head.probe);
    assert_eq!(lease.records.len(), 1);
    assert_eq!(&lease.records[0].payload[..], b"x\ny");
    assert_eq!(lease.undecodable.len(), 1);
    assert_eq!((lease.undecodable[0].0, lease.undecodable[0].1), (1, 1), "position and offset");
    assert_eq!(lease.broker_id, "b1");
}

#[test]
fn a_v3_lease_carries_the_broker_id_and_each_redriven_records_lane() {
    let mut enc = Encoder::new(Version::V3, "b-42", 3, 16);
    enc.push_from(Some("normal/0"), 3, 1, "acme", "events", b"{}");
    enc.push_from(Some("low/1"), 3, 2, "acme", "events", b"x\n");
    enc.push_from(None, 9, 3, "beta", "events", b"");
    let body = enc.finish(head(DEAD_LETTERS_LANE, 3, 10));
    assert_eq!(&body[..4], &MAGIC_V3);
    let lease = decode(Bytes::from(body)).expect("decodes").lease.expect("a lease");
    assert_eq!(lease.broker_id, "b-42");
    let lanes: Vec<&str> = lease.records.iter().map(|r| lease.lane_of(r)).collect();
    assert_eq!(lanes, ["normal/0", "low/1", DEAD_LETTERS_LANE], "offset 3 twice, told apart by lane");
    let positions: Vec<u32> = lease.records.iter().map(|r| r.position).collect();
    assert_eq!(positions, [0, 1, 2]);
    assert_eq!(&lease.records[1].payload[..], b"x\n");
}

#[test]
fn a_joint_lease_names_each_records_lane_and_holds_each_offset_of_a_lane_once() {
    let joint = |records: &[(Option<&str>, u64)]| {
        let mut enc = Encoder::new(Version::V3, "b-42", records.len(), 16);
        for &(lane, offset) in records {
            enc.push_from(lane, offset, 1, "acme", "events", b"{}");
        }
        decode(Bytes::from(enc.finish(head("normal/joint", 0, 0))))
    };
    // Two parts of lane 0 (two tenants' runs: 7, 9 then 8), one of lane 2.
    let parts = [(Some("normal/0"), 7), (Some("normal/0"), 9), (Some("normal/0"), 8), (Some("normal/2"), 3)];
    let lease = joint(&parts).expect("decodes").lease.expect("a lease");
    let lanes: Vec<&str> = lease.records.iter().map(|r| lease.lane_of(r)).collect();
    assert_eq!(lanes, ["normal/0", "normal/0", "normal/0", "normal/2"], "offsets outside [0, 0) are the lanes' own");
    let offsets: Vec<u64> = lease.records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [7, 9, 8, 3], "as sent");
    let fault = |r: Result<Decoded, LeaseFormatError>| match r {
        Err(LeaseFormatError::Record { index, fault }) => (index, fault),
        other => panic!("refused, not {other:?}"),
    };
    assert_eq!(fault(joint(&[(Some("normal/0"), 7), (None, 8)])), (1, RecordFault::LaneIndex), "a lane each");
    let back = [(Some("normal/0"), 7), (Some("normal/0"), 7)];
    assert_eq!(fault(joint(&back)), (1, RecordFault::Offset), "a record of a lane once");
    let twice = [(Some("normal/0"), 7), (Some("normal/0"), 9), (Some("normal/0"), 7)];
    assert_eq!(fault(joint(&twice)), (2, RecordFault::Offset), "once, in another part too");
    let again = [(Some("normal/0"), 7), (Some("normal/2"), 3), (Some("normal/0"), 9)];
    assert_eq!(fault(joint(&again)), (2, RecordFault::Offset), "a lane's records are together");
}

#[test]
fn a_v2_encoder_drops_what_v3_adds_and_an_old_decoder_layout_still_reads() {
    let mut enc = Encoder::new(Version::V2, "b-42", 1, 2);
    enc.push_from(Some("normal/0"), 10, 1, "acme", "events", b"{}");
    let body = enc.finish(head("normal/0", 10, 11));
    assert_eq!(&body[..4], &MAGIC);
    let lease = decode(Bytes::from(body)).expect("decodes").lease.expect("a lease");
    assert_eq!(lease.broker_id, "", "v2 carries no broker id");
    assert_eq!(lease.lane_of(&lease.records[0]), "normal/0");
    let idle = decode(Bytes::from(encode_idle_as(Version::V3, Some(IdleReason::Empty), 5))).expect("idle v3");
    assert_eq!(idle, Decoded { lease: None, idle: Some(IdleReason::Empty), retry_after_ms: 5 });
}

/// Defect 18 of issue 19: `Accept: …;Q=0` was taken as acceptance.
#[test]
fn accept_is_read_with_case_insensitive_parameters_and_q_zero_refuses() {
    assert_eq!(accepted_version("application/vnd.weir.lease.v2;Q=0"), None);
    assert_eq!(accepted_version("application/vnd.weir.lease.v2; q=0.0"), None);
    assert_eq!(accepted_version("application/vnd.weir.lease.v2;q=nan"), None);
    assert_eq!(accepted_version("APPLICATION/VND.WEIR.LEASE.V2"), Some(Version::V2));
    assert_eq!(accepted_version("application/vnd.weir.lease.v2;Q=0.5"), Some(Version::V2));
    let both = "application/vnd.weir.lease.v3, application/vnd.weir.lease.v2;q=0.8, application/json;q=0.5";
    assert_eq!(accepted_version(both), Some(Version::V3));
    assert_eq!(accepted_version("application/vnd.weir.lease.v3;Q=0, application/vnd.weir.lease.v2"), Some(Version::V2));
    assert_eq!(accepted_version("application/json"), None);
}
