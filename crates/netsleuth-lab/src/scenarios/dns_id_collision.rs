//! [003] musl 1.2.3 derives each query's ID from the clock; on a host whose clock reads coarsely the
//! A and AAAA queries of one lookup get the same ID. Answers are matched by ID alone, so the AAAA
//! answer (NODATA), arriving first, fills the A slot and the A answer the AAAA slot; each slot is
//! parsed for its own type and the name "does not resolve".

use crate::dns::{self, MuslIds, Zone};
use crate::error::Result;
use crate::lab::{Lab, ObservePlan, Outcome};
use crate::traffic::addr;
use std::net::Ipv4Addr;
use std::time::Duration;

const NAME: &str = netsleuth_core::detect::dns_id_collision::INCIDENT.id;
const HOST: &str = "loginspub.example-inc.net";
const LOOKUPS: usize = 3;

pub fn run(lab: &mut Lab) -> Result<Outcome> {
    super::dns_node(lab, false, vec![], "")?;
    let mut zone = Zone::default().with(HOST, &[Ipv4Addr::new(10, 0, 0, 80)], &[]);
    // The A answer is fetched upstream, the AAAA NODATA comes from cache: AAAA leaves first.
    zone.delay.insert(dns::TYPE_A, Duration::from_millis(30));
    let _dns = dns::serve(
        &lab.topo().pod("coredns").ns,
        addr(Ipv4Addr::UNSPECIFIED, 53),
        zone,
    )?;
    lab.observe(ObservePlan {
        node_role: "node",
        client_role: Some("client"),
        client_iface: "eth0",
        filter: None,
    })?;

    let ids = if lab.mitigated {
        MuslIds::Distinct124
    } else {
        MuslIds::Clock123CoarseClock
    };
    let h = lab.topo().pod("client").ns.spawn("client", move || {
        let mut v = Vec::new();
        for _ in 0..LOOKUPS {
            v.push(dns::musl_lookup(
                addr(super::DNS_VIP, 53),
                HOST,
                ids,
                Duration::from_secs(5),
            ));
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(v)
    })?;
    let lookups = super::join(NAME, h)?;
    let mut out = Outcome::default();
    let mut failed = 0;
    for l in &lookups {
        out.event(format!(
            "getaddrinfo({HOST}) → {:?} in {:.1} ms{}",
            l.a,
            l.elapsed.as_secs_f64() * 1e3,
            l.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ));
        for d in &l.detail {
            out.event(format!("  {d}"));
        }
        failed += usize::from(l.error.is_some());
    }
    out.measure("lookups", LOOKUPS as f64, "");
    out.measure(
        "lookups that failed although the server has an A record",
        failed as f64,
        "",
    );
    if failed > 0 {
        out.symptom = Some(format!(
            "{failed} of {LOOKUPS} lookups of {HOST} failed (\"Name does not resolve\") although the server answered A 10.0.0.80: A and AAAA carried the same ID and the AAAA answer, first, was taken for the A answer"
        ));
    } else {
        out.fine = format!("all {LOOKUPS} lookups of {HOST} returned 10.0.0.80");
    }
    Ok(out)
}
