//! `netsleuth watch`'s live side: thin read-only adapters over the kernel (`conntrack`: ctnetlink
//! events, table and statistics; `rtnl`: address/link/route changes; `sockets`: sock_diag;
//! `dropmon`: drop reasons from a private tracefs instance; per-namespace counter files) that turn
//! what the kernel says into [`event::Event`]s, and the sans-IO [`correlate::Correlator`] that turns
//! events into findings. [`runtime`] is the loop that ties them: one thread, one `poll` over every
//! source of every namespace (a netlink socket belongs to the namespace it was opened in, so sockets
//! are opened on a short-lived thread inside each namespace and read from the loop), no async runtime.
//!
//! Invariant: read-only. Nothing here writes a sysctl, a rule, an address, a route or a conntrack
//! entry; the only things created are the tracefs instance, removed on every exit path, and the tap's
//! packet sockets with their eBPF filter and its map, which belong to the process's file descriptors
//! and go with them.

pub mod bpf;
pub mod conntrack;
pub mod correlate;
pub mod dropmon;
pub mod ebpf;
pub mod event;
pub mod flight;
pub mod observe;
pub mod rtnl;
pub mod runtime;
pub mod sock;
pub mod sockets;
pub mod tap;
pub mod taps;

pub use correlate::{Correlator, Output};
pub use event::{Event, Stamped};
pub use observe::{Observe, Tick};
pub use runtime::{watch, NsTarget, WatchOptions, WatchSummary};
pub use taps::{TapOptions, TapTotals};
