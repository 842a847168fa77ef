//! What the live sources report, as plain values: the correlator's only input. A source is an adapter
//! that turns kernel messages into these; tests build them by hand.

use crate::collect::nl_conntrack::Entry;
use crate::parse::netstat::Counters;
use std::net::IpAddr;

/// Which watched namespace an event comes from: an index into the watcher's list of namespaces.
pub type NsId = u32;

/// An event with its time (ns since the Unix epoch: the kernel's timestamp where the message carries
/// one, else the moment it was received) and its namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped {
    pub ts_ns: i64,
    /// `None` for kernel-wide events (drop reasons).
    pub ns: Option<NsId>,
    pub event: Event,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtKind {
    New,
    Update,
    Destroy,
}

/// A TCP socket as sock_diag reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    /// TCP state number (1 ESTABLISHED, 10 LISTEN).
    pub state: u8,
    pub local: IpAddr,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
    /// LISTEN: connections waiting in the accept queue; else bytes not yet read.
    pub recv_queue: u32,
    /// LISTEN: the backlog; else bytes not yet acknowledged.
    pub send_queue: u32,
    pub inode: u32,
    /// ms since data was last received (tcp_info), when known.
    pub idle_ms: Option<u32>,
    /// The keepalive timer is armed (SO_KEEPALIVE on), and when it fires next (ms).
    pub keepalive_ms: Option<u32>,
}

/// A TCP socket's (local address, local port, remote address, remote port).
pub type SocketTuple = (IpAddr, u16, IpAddr, u16);

pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_LISTEN: u8 = 10;

/// The conntrack statistics summed over CPUs (the fields the kernel still fills; `conntrack -S`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtStats {
    pub found: u64,
    pub insert: u64,
    pub insert_failed: u64,
    pub drop: u64,
    pub early_drop: u64,
    pub invalid: u64,
    pub error: u64,
    pub search_restart: u64,
    pub clash_resolve: u64,
    pub chain_toolong: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A namespace the watcher now follows (the node, a pod's), with its label.
    Namespace { label: String },
    /// The namespace is gone (its last process exited, its name was deleted): its sources are closed,
    /// so that watching it does not keep it alive.
    NamespaceGone,
    Conntrack {
        kind: CtKind,
        entry: Entry,
        /// A userspace request caused it (`conntrack -D`, a flush), not the kernel itself.
        by_userspace: bool,
    },
    /// The whole table, read after a loss (or at the start): the correlator's state is replaced.
    ConntrackTable { entries: Vec<Entry> },
    Address {
        added: bool,
        ifindex: u32,
        ifname: Option<String>,
        addr: IpAddr,
        prefix_len: u8,
    },
    Link {
        added: bool,
        ifindex: u32,
        ifname: String,
    },
    Route {
        added: bool,
        /// `10.0.0.0/8`, `default`.
        dst: String,
        ifindex: Option<u32>,
    },
    /// One second's counter sample of a namespace.
    Counters {
        snmp: Counters,
        conntrack: Option<CtStats>,
    },
    /// The namespace's `nf_conntrack_tcp_timeout_established` (s): how long an idle established
    /// entry lives after its last packet.
    ConntrackTimeout { established_s: u64 },
    /// The established and listening TCP sockets of a namespace, now.
    Sockets { sockets: Vec<Socket> },
    /// A packet the kernel freed with a drop reason (kernel-wide).
    Drop { reason: String, location: String },
    /// A source lost events (netlink ENOBUFS, ring overrun): `count` losses so far on it.
    Loss { source: String, count: u64 },
    /// A source resynchronised its state after a loss.
    Resynced { source: String, what: String },
    /// A source could not be used: what it is and what its absence costs.
    Unavailable {
        source: String,
        why: String,
        costs: String,
    },
}
