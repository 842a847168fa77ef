//! A window on the watch loop for whoever counts what it does (the CLI's Prometheus metrics): every
//! event and output as it passes, and once a second what only the loop knows (which sources are open,
//! how many connections are at risk). The loop calls it synchronously, so an observer must be cheap:
//! a few atomic increments per event.

use super::correlate::Output;
use super::event::{NsId, Stamped};

/// What the loop knows once a second.
#[derive(Debug, Clone, Default)]
pub struct Tick {
    /// Each source of each namespace watched now, and whether it is open: (namespace, source, up).
    /// `None` is a kernel-wide source (drop reasons).
    pub sources: Vec<(Option<NsId>, &'static str, bool)>,
    /// Namespaces watched now (gone ones are not counted).
    pub namespaces: usize,
    /// Connections the correlator ranks as at risk now (`watch`'s `connections at risk`).
    pub connections_at_risk: usize,
    /// Events the drop-reason trace ring overwrote so far (`None`: no drop monitor).
    pub drop_ring_overrun: Option<u64>,
    /// Each open packet tap so far: (namespace, packets its filter passed, passed packets its ring
    /// had no room for).
    pub tap_packets: Vec<(NsId, u64, u64)>,
}

/// Sees the watch loop. Every method has an empty default, so an observer names only what it uses.
pub trait Observe: Send + Sync + std::fmt::Debug {
    /// Every event, before the correlator gets it (a namespace's `Namespace` event comes before any
    /// other of its events, so its label is known first).
    fn event(&self, _ev: &Stamped) {}
    /// Every finding and notice, as the caller's `on_output` gets it.
    fn output(&self, _out: &Output) {}
    /// Once a second, after the namespaces' counters are sampled.
    fn tick(&self, _tick: &Tick) {}
}
