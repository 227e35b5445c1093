use super::*;
use crate::rule::RulePack;
use crate::time::ProcessingTime;

fn t(secs: i64) -> EventTime {
    EventTime::from_micros(1_700_000_000_000_000 + secs * 1_000_000)
}

fn deploy(secs: i64, entity: &str, sha: &str) -> (Event, Matches) {
    let e = Event {
        id: Event::derive_id("github", sha, "success"),
        source: "github".into(),
        source_event_id: sha.into(),
        kind: EventKind::Deploy,
        time: t(secs),
        ingested_at: ProcessingTime::from_micros(0),
        scope: "prod".into(),
        entity: entity.into(),
        severity: Severity::None,
        status: "success".into(),
        summary: format!("deploy {sha}"),
        attributes: Default::default(),
        raw: "{}".into(),
    };
    (
        e,
        Matches {
            cause: 1,
            effect: 0,
        },
    )
}

fn alert(secs: i64, entity: &str, name: &str, status: &str, starts: i64) -> (Event, Matches) {
    let sid = format!("{name}-{entity}@{starts}");
    let e = Event {
        id: Event::derive_id("alertmanager", &sid, status),
        source: "alertmanager".into(),
        source_event_id: sid,
        kind: EventKind::Alert,
        time: t(secs),
        ingested_at: ProcessingTime::from_micros(0),
        scope: "prod".into(),
        entity: entity.into(),
        severity: Severity::Critical,
        status: status.into(),
        summary: name.into(),
        attributes: [("alertname".to_owned(), name.to_owned())].into(),
        raw: "{}".into(),
    };
    let effect = u64::from(status == "firing");
    (e, Matches { cause: 0, effect })
}

fn correlator() -> Correlator {
    let pack = RulePack::builtin().expect("pack");
    Correlator::new(&pack.rules()[..1], CorrelatorConfig::default())
}

fn run(c: &mut Correlator, input: Vec<(Event, Matches)>, watermark: i64) -> Output {
    let mut out = Output::default();
    for (e, m) in input {
        c.push(e, m, Duration::from_secs(600), &mut out);
    }
    c.advance(t(watermark), &mut out);
    out
}

fn latest(out: &Output) -> BTreeMap<String, IncidentVersion> {
    let mut m = BTreeMap::new();
    for v in &out.incidents {
        m.insert(v.incident_id.clone(), v.clone());
    }
    m
}

#[test]
fn deploy_then_alerts_within_window_open_one_incident_rooted_at_the_deploy() {
    let mut c = correlator();
    let (d, dm) = deploy(0, "checkout", "abc");
    let deploy_id = d.id.clone();
    let out = run(
        &mut c,
        vec![
            (d, dm),
            alert(120, "checkout", "HighErrorRate", "firing", 120),
            alert(180, "checkout", "HighLatency", "firing", 180),
        ],
        1000,
    );
    let incidents = latest(&out);
    assert_eq!(incidents.len(), 1);
    let inc = incidents.values().next().expect("one");
    assert_eq!(inc.root_cause_event_id.as_deref(), Some(deploy_id.as_str()));
    assert_eq!(inc.rule_id, "deploy-regression");
    assert_eq!(inc.event_count, 3);
    assert_eq!(inc.version, 2);
    assert_eq!(inc.state, IncidentState::Updated);
    assert!(
        inc.title.contains("HighErrorRate, HighLatency"),
        "{}",
        inc.title
    );
    let roles: Vec<_> = out.edges.iter().map(|e| (e.role, e.lag_seconds)).collect();
    assert_eq!(
        roles,
        vec![
            (EdgeRole::Cause, 0.0),
            (EdgeRole::Effect, 120.0),
            (EdgeRole::Effect, 180.0)
        ]
    );
}

#[test]
fn alerts_outside_the_window_or_on_other_entities_are_grouped_on_their_own() {
    let mut c = correlator();
    let out = run(
        &mut c,
        vec![
            deploy(0, "checkout", "abc"),
            alert(3600, "checkout", "HighErrorRate", "firing", 3600),
            alert(60, "search", "HighErrorRate", "firing", 60),
        ],
        4000,
    );
    let incidents = latest(&out);
    assert_eq!(incidents.len(), 2);
    assert!(incidents.values().all(|i| i.rule_id == ALERT_GROUP_RULE));
    assert!(incidents.values().all(|i| i.root_cause_event_id.is_none()));
}

#[test]
fn a_cause_that_arrives_after_its_effect_still_links_within_the_watermark() {
    let mut c = correlator();
    let out = run(
        &mut c,
        vec![
            alert(60, "checkout", "HighErrorRate", "firing", 60),
            deploy(0, "checkout", "abc"),
        ],
        100,
    );
    let incidents = latest(&out);
    assert_eq!(incidents.len(), 1);
    assert_eq!(
        incidents.values().next().expect("one").rule_id,
        "deploy-regression"
    );
}

#[test]
fn resends_count_once_and_resolution_closes_the_incident() {
    let mut c = correlator();
    let mut out = run(
        &mut c,
        vec![
            alert(60, "cart", "PodCrashLooping", "firing", 60),
            alert(60, "cart", "PodCrashLooping", "firing", 60),
        ],
        100,
    );
    let (dup, m) = alert(60, "cart", "PodCrashLooping", "firing", 60);
    assert_eq!(
        c.push(dup, m, Duration::from_secs(600), &mut out),
        PushOutcome::Duplicate
    );
    out.extend(run(
        &mut c,
        vec![alert(300, "cart", "PodCrashLooping", "resolved", 60)],
        400,
    ));
    let incidents = latest(&out);
    assert_eq!(incidents.len(), 1);
    let inc = incidents.values().next().expect("one");
    assert_eq!(inc.state, IncidentState::Resolved);
    assert_eq!(inc.resolved_at, Some(t(300)));
    assert_eq!(inc.event_count, 2);
}

#[test]
fn a_resolved_group_does_not_absorb_new_alerts() {
    let mut c = correlator();
    let out = run(
        &mut c,
        vec![
            alert(60, "cart", "PodCrashLooping", "firing", 60),
            alert(90, "cart", "PodCrashLooping", "resolved", 60),
            alert(120, "cart", "PodCrashLooping", "firing", 120),
        ],
        400,
    );
    assert_eq!(latest(&out).len(), 2);
}

#[test]
fn too_late_events_are_reported_not_dropped() {
    let mut c = correlator();
    let mut out = run(&mut c, vec![deploy(10_000, "a", "x")], 10_000);
    let (e, m) = alert(0, "a", "Old", "firing", 0);
    assert_eq!(
        c.push(e, m, Duration::from_secs(60), &mut out),
        PushOutcome::TooLate
    );
    assert_eq!(out.too_late.len(), 1);
}

#[test]
fn snapshot_and_restore_resume_with_identical_output() {
    let input = vec![
        deploy(0, "checkout", "abc"),
        alert(120, "checkout", "HighErrorRate", "firing", 120),
        alert(180, "checkout", "HighLatency", "firing", 180),
        alert(500, "checkout", "HighLatency", "resolved", 180),
    ];
    let mut whole = correlator();
    let expected = run(&mut whole, input.clone(), 1000);

    let mut first = correlator();
    let mut out = run(&mut first, input[..2].to_vec(), 130);
    let snap = first.snapshot().expect("snapshot");
    let mut second = correlator();
    second.restore(&snap).expect("restore");
    out.extend(run(&mut second, input[2..].to_vec(), 1000));
    assert_eq!(out, expected);
}

#[test]
fn ids_do_not_depend_on_arrival_order_within_the_watermark() {
    let input = vec![
        deploy(0, "checkout", "abc"),
        alert(120, "checkout", "HighErrorRate", "firing", 120),
        alert(130, "search", "DiskFull", "firing", 130),
        alert(180, "checkout", "HighLatency", "firing", 180),
    ];
    let mut a = correlator();
    let forward = run(&mut a, input.clone(), 1000);
    let mut reversed = input;
    reversed.reverse();
    let mut b = correlator();
    let backward = run(&mut b, reversed, 1000);
    assert_eq!(forward, backward);
}

#[test]
fn a_long_firing_alert_resent_after_the_dedup_horizon_is_a_duplicate_not_late() {
    let mut c = correlator();
    let mut out = run(
        &mut c,
        vec![alert(0, "cart", "PodCrashLooping", "firing", 0)],
        10,
    );
    // Hours later (other traffic moves the watermark), the same alert is re-sent.
    out.extend(run(
        &mut c,
        vec![alert(4 * 3600, "cart", "Other", "firing", 4 * 3600)],
        4 * 3600 + 10,
    ));
    let (again, m) = alert(0, "cart", "PodCrashLooping", "firing", 0);
    assert_eq!(
        c.push(again, m, Duration::from_secs(600), &mut out),
        PushOutcome::Duplicate
    );
    assert!(out.too_late.is_empty());
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn arb_event() -> impl Strategy<Value = (Event, Matches)> {
        let entity = prop::sample::select(vec!["checkout", "payments", "search"]);
        let name = prop::sample::select(vec!["HighErrorRate", "HighLatency", "CrashLoop"]);
        (0i64..3600, entity, name, 0u8..4).prop_map(|(t, entity, name, k)| match k {
            0 => deploy(t, entity, &format!("sha{t}-{entity}")),
            // Real ids are fingerprint + startsAt, and the event time of a firing
            // alert is its startsAt: one id, one time.
            1 => alert(t / 60 * 60 + 300, entity, name, "resolved", t / 60 * 60),
            _ => alert(t / 60 * 60, entity, name, "firing", t / 60 * 60),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn arrival_order_and_duplicates_do_not_change_incidents(
            events in prop::collection::vec(arb_event(), 1..60),
            seed in any::<u64>(),
            dup_every in 1usize..5,
        ) {
            let mut a = correlator();
            let expected = run(&mut a, events.clone(), 100_000);

            // A deterministic shuffle plus duplicates of every `dup_every`-th event.
            let mut shuffled: Vec<(Event, Matches)> = events.clone();
            for (i, e) in events.iter().enumerate() {
                if i % dup_every == 0 {
                    shuffled.push(e.clone());
                }
            }
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let mut b = correlator();
            let got = run(&mut b, shuffled, 100_000);
            prop_assert_eq!(got, expected);
        }
    }
}
