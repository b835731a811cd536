//! Every `capstan` command and its arguments, in one place. Each command
//! is carried out by a module under `cmd/`; all but the node's life are a
//! call on the host agent over the control socket.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "capstan",
    version,
    about = "An object-capability peer node",
    propagate_version = true
)]
pub struct Cli {
    /// The node's state directory (default: the XDG state directory).
    #[arg(long, global = true, env = "CAPSTAN_STATE", value_name = "DIR")]
    pub state: Option<PathBuf>,

    /// Act as a sub-agent: a dot-path of names from the host.
    #[arg(long = "as", global = true, value_name = "AGENT.PATH")]
    pub as_agent: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the node (in the background unless --foreground).
    Start(Start),
    /// Stop the node: workers are ended and the store is closed.
    Stop,
    /// Stop the node if it runs, then start it.
    Restart(Start),
    /// Show whether the node runs, and its details.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Check that the node answers.
    Ping,
    /// Invite a peer: prints a locator to give to the other node's `accept`.
    Invite { guest: String },
    /// Accept an invitation (the locator from standard input if omitted),
    /// naming the inviter NAME.
    Accept { name: String, locator: Option<String> },
    /// List the known peers: node id, then addresses.
    Peers {
        #[arg(long)]
        json: bool,
    },
    /// Print the node's log.
    Log {
        /// Keep printing as the log grows.
        #[arg(short, long)]
        follow: bool,
    },
    /// Print where the node keeps a file.
    Where {
        #[arg(value_enum)]
        what: WhereWhat,
    },
    /// Delete the node's state (stopping it first).
    Purge {
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
    },
    /// Evaluate JavaScript in a worker; endowments are `code:name`.
    Eval {
        source: String,
        /// Endowments: `codeName:petName.path`, or `name` for both.
        endowments: Vec<String>,
        /// The worker to evaluate in (default: MAIN).
        #[arg(short, long)]
        worker: Option<String>,
        /// Name the result.
        #[arg(short, long)]
        name: Option<String>,
    },
    /// Make or get a named worker.
    Spawn { name: String },
    /// Run a module's `make(powers)` in a worker.
    Make {
        /// A module file exporting `make(powers)`.
        file: Option<PathBuf>,
        /// A stored blob holding the module, instead of a file.
        #[arg(long, value_name = "BLOBNAME", conflicts_with = "file")]
        bundle: Option<String>,
        #[arg(short, long)]
        worker: Option<String>,
        /// The agent whose powers the module gets (default: NONE).
        #[arg(short, long)]
        powers: Option<String>,
        #[arg(short, long)]
        name: Option<String>,
    },
    /// List names (of the agent, or of a directory path).
    List {
        path: Option<String>,
        #[arg(long)]
        json: bool,
        /// Keep printing names as they are added (`-name` when removed).
        #[arg(short, long)]
        follow: bool,
    },
    /// Print the value of a name.
    Show { name: String },
    /// Print each value a named stream gives.
    Follow { name: String },
    /// Write a blob's bytes to standard output.
    Cat { name: String },
    /// Remove names.
    #[command(alias = "rm")]
    Remove {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Rename, possibly into another directory.
    #[command(alias = "mv")]
    Move { from: String, to: String },
    /// Give a value a second name.
    #[command(alias = "cp")]
    Copy { from: String, to: String },
    /// Make a directory.
    Mkdir { path: String },
    /// Print a name's locator.
    Locate { name: String },
    /// Store a blob or a value under a name.
    Store(StoreArgs),
    /// Forget a value and everything made from it; it is remade on next use.
    Cancel { name: String },
    /// Collect every value nothing names or holds any more, and print
    /// what was collected.
    Gc {
        #[arg(long)]
        json: bool,
    },
    /// Make (or get) a host agent under a name.
    Mkhost { name: String },
    /// Install a web app: DIR's files (`index.html` at its root), named
    /// NAME; its page gets a new guest `NAME-agent`, or --powers AGENT.
    Install {
        dir: PathBuf,
        #[arg(short, long)]
        name: String,
        /// The agent whose powers the page gets (default: a new guest).
        #[arg(short, long, value_name = "AGENT")]
        powers: Option<String>,
        /// Give the new guest one of your names: `yours:theirs` (repeatable).
        #[arg(long = "introduce", value_name = "YOURS:THEIRS")]
        introduce: Vec<String>,
    },
    /// Print a web app's URL and open it in a browser (xdg-open, $BROWSER).
    Open {
        name: String,
        /// Only print the URL.
        #[arg(long)]
        print: bool,
    },
    /// Make (or get) a guest agent under a name.
    Mkguest {
        name: String,
        /// Give the guest one of your names: `yours:theirs` (repeatable).
        #[arg(long = "introduce", value_name = "YOURS:THEIRS")]
        introduce: Vec<String>,
    },
    /// Print your messages, one per line (`-f` to keep following).
    Inbox {
        #[arg(short, long)]
        follow: bool,
    },
    /// Send a message; `@edge:petname` (or `@name`) carries a reference.
    Send { agent: String, text: String },
    /// Name a reference from a package.
    Adopt {
        number: u64,
        edge: String,
        #[arg(short, long)]
        name: Option<String>,
    },
    /// Remove a message.
    Dismiss { number: u64 },
    /// Ask another agent for a value (default: your HOST).
    Request {
        description: String,
        #[arg(short, long, value_name = "AGENT")]
        to: Option<String>,
        /// Keep the answer under this name; asking again returns it.
        #[arg(short, long)]
        name: Option<String>,
    },
    /// Answer a request with one of your names.
    Resolve { number: u64, name: String },
    /// Refuse a request.
    Reject { number: u64, message: Option<String> },
    /// Drop every hold a peer's node has on this node's values (PEER names
    /// its handle, as `send` takes); prints how many ids it held.
    Forget { peer: String },
    /// Show how many of this node's ids each peer holds, and how many ids
    /// it holds from each peer.
    Holds {
        #[arg(long)]
        json: bool,
    },
    /// The kernel: subclusters of vats, their objects and services.
    #[command(subcommand)]
    Kernel(KernelCommand),
    /// The worker process the node starts (not for people).
    #[command(name = "__worker", hide = true)]
    Worker {
        #[arg(long)]
        memory_bytes: u64,
        #[arg(long)]
        time_budget_ms: u64,
    },
}

/// `capstan kernel ...`: calls on the host's `KERNEL` object.
#[derive(Subcommand, Debug)]
pub enum KernelCommand {
    /// Show the vats, subclusters and remote comms of the kernel.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Launch a subcluster from a cluster config file; prints its id and
    /// root kref (`sourceSpec` paths are relative to the file).
    Launch {
        config: PathBuf,
        /// Print `{"subclusterId", "rootKref", "bootstrapResult"}`.
        #[arg(long)]
        json: bool,
    },
    /// Terminate a subcluster: its vats stop and their state is forgotten.
    Terminate { id: String },
    /// List the subclusters, one a line.
    Subclusters {
        #[arg(long)]
        json: bool,
    },
    /// Send METHOD to a kernel object (or promise) and print the result as
    /// `eval` does.
    Queue {
        /// An object (`ko5`) or a kernel promise (`kp3`: the send is
        /// pipelined, it need not have settled).
        kref: String,
        method: String,
        /// The arguments as a JSON array; `{"@kref": "ko5"}` is that object.
        args: Option<String>,
        /// Do not wait for the result: print the kernel promise (`kp<N>`)
        /// for it, which later sends may target.
        #[arg(long)]
        no_wait: bool,
    },
    /// Restart a vat: its program runs again with its baggage.
    RestartVat { vat: String },
    /// Terminate one vat: its state is forgotten and its objects reject
    /// every later send.
    TerminateVat { vat: String },
    /// Collect garbage across the kernel: vats release what they no longer
    /// hold, and krefs no one holds are retired.
    CollectGarbage {
        #[arg(long)]
        json: bool,
    },
    /// Print an OCAP URL that makes an object reachable from another node.
    IssueUrl { kref: String },
    /// Redeem an OCAP URL (from this or another node); prints a kref for
    /// its object here.
    RedeemUrl {
        url: String,
        /// Also name the object for this agent (a pet name path).
        #[arg(short = 'n', long = "name")]
        name: Option<String>,
    },
    /// Revoke an object: every later send to it fails.
    Revoke { kref: String },
    /// Print whether an object is revoked (`true` or `false`).
    Revoked { kref: String },
    /// Check that a vat answers.
    PingVat { vat: String },
    /// Stop every vat and forget every subcluster (needs --yes).
    Reset {
        /// Really reset.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Args, Debug, Clone)]
pub struct Start {
    /// Stay attached to the terminal.
    #[arg(long)]
    pub foreground: bool,
    /// A libp2p address to listen on (repeatable). By default the node
    /// listens on every interface, IPv4 and IPv6, TCP and QUIC, on one
    /// port picked at its first start and kept.
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<String>,
    /// Listen on loopback only (reachable from this machine alone).
    #[arg(long, conflicts_with = "listen")]
    pub local: bool,
    /// Keep a reservation on this relay (repeatable): nodes that cannot
    /// dial this one reach it through the relay, and its invitations carry
    /// the relayed address. The address ends with the relay's /p2p/ id
    /// (`capstan status` on the relay prints it).
    #[arg(long, value_name = "MULTIADDR")]
    pub relay: Vec<String>,
    /// Serve as a relay for other nodes, within the limits of the config
    /// file's [relay] section.
    #[arg(long)]
    pub relay_service: bool,
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct StoreSource {
    /// A file to store as a blob.
    #[arg(long)]
    pub path: Option<PathBuf>,
    /// Store standard input as a blob.
    #[arg(long)]
    pub stdin: bool,
    /// Store a string value.
    #[arg(long)]
    pub text: Option<String>,
    /// Store a JSON value.
    #[arg(long)]
    pub json: Option<String>,
}

#[derive(Args, Debug)]
pub struct StoreArgs {
    #[arg(short, long)]
    pub name: String,
    #[command(flatten)]
    pub source: StoreSource,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum WhereWhat {
    State,
    Sock,
    Log,
}
