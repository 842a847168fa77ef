//! Command-line flags. Nothing below `cmd` imports clap: flags become plain options here.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "netsleuth",
    version = crate::build_info::VERSION,
    about = "Names the root cause of Kubernetes/Linux node-networking failures: from a capture, a node, or a lab reproduction."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub terminal: TerminalArgs,
}

/// How the output looks on a terminal; valid with every command.
#[derive(Args, Debug, Clone)]
pub struct TerminalArgs {
    /// Colour for confidence, kinds and headings: `auto` colours a terminal unless NO_COLOR is set.
    #[arg(long, value_enum, default_value = "auto", global = true)]
    pub color: ColorChoice,
    /// Only the causes (the report's headline), no progress bar, nothing on stderr but errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Capture timestamps in UTC instead of the local zone.
    #[arg(long, global = true)]
    pub utc: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Analyse captures (pcap/pcapng, optionally gzip) of one incident; `-` reads stdin.
    Analyze(AnalyzeArgs),
    /// Audit a node's state (live, or a bundle) for incidents and latent risks.
    Check(CheckArgs),
    /// Collect the node's facts into a bundle (tar.gz), read-only.
    Collect(CollectArgs),
    /// Compare two bundles (a broken node and a healthy one), catalogue differences first.
    Diff(DiffArgs),
    /// Reproduce incidents in network namespaces and prove the diagnosis.
    Lab(LabArgs),
    /// List the incident catalogue.
    Catalogue(FormatArgs),
    /// Print one catalogue entry: mechanism, evidence per source, fix, sysctls, version facts.
    Explain(ExplainArgs),
    /// Print a shell completion script (e.g. `netsleuth completions bash > /etc/bash_completion.d/netsleuth`).
    Completions(CompletionsArgs),
    /// Print the man page (roff), e.g. `netsleuth man > netsleuth.1`.
    Man,
    /// Watch the live node (and its pods' namespaces) and name incidents as they happen, read-only.
    Watch(WatchArgs),
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// A catalogue id (`netsleuth catalogue` lists them).
    pub id: String,
    #[command(flatten)]
    pub format: FormatArgs,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Watch this network namespace (a name in /run/netns, or a path such as /proc/PID/ns/net)
    /// instead of the node's own and its processes'; repeatable.
    #[arg(long = "netns", value_name = "NAME|PATH")]
    pub netns: Vec<String>,
    /// Watch every network namespace a process lives in (the default without --netns), and those
    /// that appear later.
    #[arg(long)]
    pub all_netns: bool,
    /// Stop after this long (`90s`, `5m`, `1h`; default: until SIGINT/SIGTERM).
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Do not read kernel drop reasons (no tracefs instance): the tracepoint is kernel-wide and costs
    /// CPU on a busy machine (BENCHMARKS.md "Watch").
    #[arg(long)]
    pub no_drop_reasons: bool,
    /// Receive buffer of each netlink event socket, in KiB.
    #[arg(long, default_value_t = 8192, hide = true)]
    pub rcvbuf_kib: u32,
    /// Do not open the packet tap (an AF_PACKET socket with a BPF filter in each namespace): the
    /// incidents seen only on the wire are then not watched.
    #[arg(long)]
    pub no_tap: bool,
    /// For each finding the tap names, write its packets (pcap), the namespace's node bundle and the
    /// finding (JSON) into DIR: `netsleuth analyze --node DIR/finding-N-ID.node.tar.gz
    /// DIR/finding-N-ID.pcap` finds it again.
    #[arg(long, value_name = "DIR")]
    pub record: Option<std::path::PathBuf>,
    /// Most MiB the --record directory's finding files may use; the oldest findings' go first.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    pub record_cap_mib: u64,
    /// Output: human lines as findings happen, or JSON Lines (one finding or notice per line).
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,
    /// Serve Prometheus metrics at http://ADDR/metrics while watching (`127.0.0.1:9464`,
    /// `[::]:9464`; port 0 picks one and says which on stderr).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
}

/// `90`, `90s`, `5m`, `1h`, `250ms`.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 90s, 5m, 1h)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (ms, s, m, h)")),
    };
    if !(0.0..1e9).contains(&secs) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
    /// One self-contained page (ladder diagrams, DNS timelines, counter charts); with `-o FILE`.
    Html,
}

#[derive(Args, Debug)]
pub struct FormatArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,
    /// Write the report to FILE instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// The options of the commands that report findings.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,
    /// Kubernetes objects to name addresses by: the output of `kubectl get
    /// pods,services,endpointslices,nodes -A -o json` (a kubelet's pod list also reads).
    #[arg(long, value_name = "FILE")]
    pub k8s: Option<PathBuf>,
    /// Read the same objects from the API server: in a pod its service account, elsewhere the
    /// kubeconfig (`KUBECONFIG`, ~/.kube/config). Needs a build with `--features k8s-api`.
    #[arg(long)]
    pub k8s_api: bool,
    /// Write the report to FILE instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    /// Capture files, analysed together as views of one incident (`-` = stdin).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// A node bundle (from `netsleuth collect`) of the node where the capture was taken.
    #[arg(long)]
    pub node: Option<PathBuf>,
    /// The client's /etc/hosts (to recognise DNS queries for pinned names).
    #[arg(long)]
    pub hosts: Option<PathBuf>,
    /// Memory the analysis state may use, in MiB (flow and DNS tables, read buffers). Past it the
    /// oldest half-open connections and queries are handed to the detectors early, and the report
    /// says so.
    #[arg(long, value_name = "MIB", default_value_t = 200, value_parser = clap::value_parser!(u64).range(16..=1 << 20))]
    pub memory_budget: u64,
    /// Threads to use: with 2 or more, reading and decoding run beside the flow engine and detectors
    /// (the findings are identical to one thread's). Default: the cores available, at most 2.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub threads: Option<u64>,
    /// Read every capture file through a buffer. By default a file of small records (at most 512
    /// bytes on average, as a snap length makes them) is mapped into memory instead, which saves a
    /// copy of every byte, and with two threads any plain capture file is (the second thread reads
    /// a full-size file's lines ahead of the first); a file truncated by another process while
    /// mapped would end the analysis with SIGBUS.
    #[arg(long)]
    pub no_mmap: bool,
    /// After the report, print to stderr where the time went: opening the inputs, the packets (with
    /// two threads, each half's time working and waiting for the other), finishing, the report.
    #[arg(long)]
    pub timings: bool,
    #[command(flatten)]
    pub format: ReportArgs,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Audit a bundle instead of the live node.
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// Query each nameserver of the node's and containers' resolv.conf (the only active step).
    #[arg(long)]
    pub probe: bool,
    /// Seconds between the two counter samples of a live check.
    #[arg(long, default_value_t = 3.0)]
    pub interval: f64,
    /// Audit the network namespace at this path (e.g. /run/netns/NAME) instead of the host's.
    #[arg(long)]
    pub netns: Option<PathBuf>,
    #[command(flatten)]
    pub format: ReportArgs,
}

#[derive(Args, Debug)]
pub struct CollectArgs {
    /// Bundle file to write (tar.gz); `-` writes it to stdout.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Also query each nameserver (the only active step) and keep the answers in the bundle.
    #[arg(long)]
    pub probe: bool,
    /// Seconds between the two counter samples.
    #[arg(long, default_value_t = 3.0)]
    pub interval: f64,
    /// Collect the network namespace at this path instead of the host's.
    #[arg(long)]
    pub netns: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    pub a: PathBuf,
    pub b: PathBuf,
    #[command(flatten)]
    pub format: ReportArgs,
}

#[derive(Args, Debug)]
pub struct LabArgs {
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(Subcommand, Debug)]
pub enum LabCommand {
    /// List scenarios, the incident each shows, and whether this kernel reproduces it natively.
    List(FormatArgs),
    /// Run one scenario (or --all) and analyse what it captured.
    Run(LabRunArgs),
    /// Remove lab namespaces whose run is over (left by --keep, or by a run that was killed).
    Cleanup,
}

#[derive(Args, Debug)]
pub struct LabRunArgs {
    /// Scenario name (see `netsleuth lab list`).
    #[arg(required_unless_present = "all")]
    pub scenario: Option<String>,
    /// Run every scenario.
    #[arg(long, conflicts_with = "scenario")]
    pub all: bool,
    /// Apply the documented fix and show the symptom and the finding gone.
    #[arg(long)]
    pub mitigated: bool,
    /// Directory for captures, conntrack events and counters (default: a new temporary directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Keep the namespaces after the run (for inspection; remove them with `ip netns del`).
    #[arg(long)]
    pub keep: bool,
    /// Run `netsleuth watch` on the lab's namespaces while the incident happens, and show what it
    /// named and when.
    #[arg(long)]
    pub watch: bool,
    #[command(flatten)]
    pub format: ReportArgs,
}

/// `netsleuth completions SHELL`: the completion script, generated from these definitions.
pub fn completion_script(shell: clap_complete::Shell) -> Vec<u8> {
    use clap::CommandFactory;
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "netsleuth", &mut buf);
    buf
}

/// `netsleuth man`: the man page (roff) of the command, then a section per subcommand so every flag
/// is documented.
pub fn man_page() -> std::io::Result<Vec<u8>> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name().to_string();
        let sub = sub.clone().display_name(format!("netsleuth-{name}"));
        let mut page = Vec::new();
        clap_mangen::Man::new(sub).render(&mut page)?;
        buf.extend_from_slice(format!(".\\\" netsleuth {name}\n").as_bytes());
        // The subcommand's page without its own title line: a section of this page.
        let text = String::from_utf8_lossy(&page);
        for line in text.lines().filter(|l| !l.starts_with(".TH ")) {
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
        }
    }
    Ok(buf)
}
