//! The `tailopsmcp` command: CLI parsing, tracing setup, building state, exit codes. The only
//! place that turns errors into exit codes; it holds no product logic.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use tailopsmcp::approvals::{self, Approvals};
use tailopsmcp::audit::{self, AuditOptions, Auditor, Query};
use tailopsmcp::config::{Config, Overrides};
use tailopsmcp::http::{self, AppState, IdentityMode};
use tailopsmcp::tailnet::{self, localapi::LocalApi};
use tailopsmcp::targets::{Registry, TargetError};
use tailopsmcp::tools::{self, ToolContext};
use tailopsmcp::{mcp, policy};

#[derive(Parser)]
#[command(
    name = "tailopsmcp",
    version,
    about = "An MCP server for your homelab, reachable only over your tailnet"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// Configuration file [default: /etc/tailopsmcp/config.toml if it exists]
    #[arg(long, global = true, env = "TAILOPSMCP_CONFIG")]
    config: Option<PathBuf>,
    /// TCP port on each tailnet address
    #[arg(long, global = true, env = "TAILOPSMCP_PORT")]
    port: Option<u16>,
    /// tailscaled's LocalAPI socket
    #[arg(long, global = true, env = "TAILOPSMCP_SOCKET")]
    socket: Option<PathBuf>,
    /// SQLite audit database
    #[arg(long, global = true, env = "TAILOPSMCP_DATABASE")]
    database: Option<PathBuf>,
    /// App capability name carrying grants in the tailnet policy file
    #[arg(long, global = true, env = "TAILOPSMCP_CAPABILITY")]
    capability: Option<String>,
    /// Tailscale Service (`svc:NAME`) to serve behind, on a PROXY v2 loopback listener
    #[arg(long, global = true, env = "TAILOPSMCP_SERVICE")]
    service: Option<String>,
    /// Loopback address of the Tailscale Service listener [default: 127.0.0.1:8472]
    #[arg(long, global = true, env = "TAILOPSMCP_SERVICE_LISTEN")]
    service_listen: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve MCP on this node's tailnet addresses (or on loopback with --dev-listen)
    Serve {
        /// Dev mode: listen on this loopback address instead of the tailnet (no Tailscale needed)
        #[arg(long, requires = "dev_identity")]
        dev_listen: Option<SocketAddr>,
        /// Dev mode: the identity every request gets (marked `dev` in audit rows)
        #[arg(long, requires = "dev_listen")]
        dev_identity: Option<String>,
    },
    /// Show what the server would see for a caller at ADDR (IP or IP:PORT): identity, scopes, grants
    Whois {
        addr: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Validate the configuration and print a summary
    CheckConfig,
    /// Read the audit log
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Two-person approvals: list requests, approve or deny one as `host:<your unix user>`
    Approvals {
        #[command(subcommand)]
        command: ApprovalsCommand,
    },
    /// Inspect the configured targets
    Targets {
        #[command(subcommand)]
        command: TargetsCommand,
    },
    /// Print the polkit rule that lets the `tailopsmcp` user start/stop/restart/reload the units
    /// of `[services] units` and start the root helper (install as
    /// /etc/polkit-1/rules.d/50-tailopsmcp.rules)
    PolkitRules,
    /// The root helper, run only by tailopsmcp-helper@.service: one validated request (`%I`)
    #[command(hide = true)]
    Helper { request: String },
}

#[derive(Subcommand)]
enum TargetsCommand {
    /// Check connectivity and credentials of every target, or of one
    Check {
        /// Target id or `group:NAME` (default: all)
        id: Option<String>,
        /// JSON lines instead of a table
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ApprovalsCommand {
    /// Requests waiting for a decision (newest first)
    List {
        /// Decided, used and expired ones too
        #[arg(long)]
        all: bool,
        /// At most this many
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// JSON lines instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Approve a request: it then runs once when its requester calls it again
    Approve { id: String },
    /// Deny a request
    Deny { id: String },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// The newest records (and follow new ones with --follow)
    Tail {
        /// How many records
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// Keep printing new records as they arrive
        #[arg(short, long)]
        follow: bool,
        /// JSON lines instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Check the audit hash chain; exit 1 and print the first broken link
    Verify,
    /// Delete records older than a cut-off, leaving a hash-chained checkpoint row so `audit
    /// verify` still verifies what is kept
    Prune {
        /// RFC 3339 time or an age like 90d, 12h (records older than this go)
        #[arg(long)]
        before: String,
        /// Show what would be deleted; delete and write nothing
        #[arg(long)]
        dry_run: bool,
        /// One JSON object instead of a sentence
        #[arg(long)]
        json: bool,
    },
    /// Export audit records with their chain hashes, one JSON object per line (for SIEMs)
    Export {
        #[arg(long, value_parser = ["jsonl"], default_value = "jsonl")]
        format: String,
        /// RFC 3339 time or an age like 15m, 2h, 7d
        #[arg(long)]
        since: Option<String>,
    },
    /// Records matching filters, oldest first
    Query {
        #[command(flatten)]
        filter: Filter,
        /// At most this many records (the newest matching)
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// JSON lines instead of a table
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct Filter {
    /// Principal (login, or tag set like `tag:ci`)
    #[arg(long)]
    principal: Option<String>,
    /// Tool name
    #[arg(long)]
    tool: Option<String>,
    /// allow or deny
    #[arg(long)]
    decision: Option<String>,
    /// RFC 3339 time or an age like 15m, 2h, 7d
    #[arg(long)]
    since: Option<String>,
    /// RFC 3339 time or an age like 15m, 2h, 7d
    #[arg(long)]
    until: Option<String>,
}

/// mimalloc instead of glibc's malloc: a server answering many small requests on a few threads
/// spends a fifth of its time in glibc malloc/free, and glibc's per-thread arenas keep freed
/// memory resident after a load peak (see benches/HISTORY.md, "Design figures").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tailopsmcp: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    // rmcp logs every session set-up (with the client's parameters) at info: on a busy server,
    // and on every stateless request, that is noise in the journal. Its warnings still show.
    let filter = EnvFilter::try_from_env("TAILOPSMCP_LOG").unwrap_or_else(|_| EnvFilter::new("info,rmcp=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal; journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let overrides = Overrides {
        port: cli.global.port,
        socket: cli.global.socket.clone(),
        database: cli.global.database.clone(),
        capability: cli.global.capability.clone(),
        service: cli.global.service.clone(),
        service_listen: cli.global.service_listen.clone(),
    };
    let config = Config::load(cli.global.config.as_deref(), &overrides)?;
    if !matches!(cli.command, Command::Serve { .. }) {
        // Printing commands end quietly when their reader goes away (`audit query | head`).
        // The server keeps Rust's default of ignoring SIGPIPE: it writes to sockets.
        // SAFETY: setting a signal disposition before any other thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match cli.command {
        Command::Serve {
            dev_listen,
            dev_identity,
        } => runtime()?.block_on(serve(config, dev_listen.zip(dev_identity))),
        Command::Whois { addr, json } => runtime()?.block_on(whois(config, &addr, json)),
        Command::CheckConfig => check_config(&config),
        Command::Audit { command } => audit_cmd(&config, command),
        Command::Approvals { command } => runtime()?.block_on(approvals_cmd(&config, command)),
        Command::Targets {
            command: TargetsCommand::Check { id, json },
        } => runtime()?.block_on(targets_check(&config, id, json)),
        Command::PolkitRules => {
            print!("{}", tailopsmcp::exec::systemd::polkit_rules(&config.services.units));
            Ok(ExitCode::SUCCESS)
        }
        Command::Helper { request } => {
            let name = config
                .source
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(no config file)".to_string());
            match tailopsmcp::exec::helper::run(&request, &config.services.units, &name) {
                Ok(true) => Ok(ExitCode::SUCCESS),
                Ok(false) => Ok(ExitCode::from(1)),
                Err(e) => {
                    eprintln!("tailopsmcp helper: {e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn serve(config: Config, dev: Option<(SocketAddr, String)>) -> anyhow::Result<ExitCode> {
    let config = Arc::new(config);
    if let Some((addr, _)) = &dev
        && !tailnet::is_loopback(addr.ip())
    {
        bail!("--dev-listen {addr} is not a loopback address; the dev listener only binds 127.0.0.0/8 or [::1]");
    }
    // The whole config (targets, tool selection, approvals) is checked before anything is
    // created on disk.
    let registry = Arc::new(build_registry(&config)?);
    let offered = tools::select(&config.tools).map_err(|e| anyhow::anyhow!("{}: {e}", config_name(&config)))?;
    let offered = tools::for_targets(offered, &registry);
    check_approval_tools(&config)?;
    let auditor = Auditor::open(
        &config.database,
        AuditOptions {
            redact_fields: config.redact_fields.clone(),
            journald: config.journald,
            refusal_window: config.refusal_window,
        },
    )
    .with_context(|| format!("cannot open the audit database {}", config.database.display()))?;
    let shutdown = CancellationToken::new();
    let approvals = Approvals::open(&config.database, config.approvals.clone())
        .with_context(|| format!("cannot open the approvals store {}", config.database.display()))?;
    let shared = Arc::new(
        mcp::Shared::new(
            config.clone(),
            offered,
            registry,
            config.capability.clone(),
            config.grants.clone(),
            auditor.clone(),
        )
        .with_approvals(Arc::new(approvals)),
    );
    let mode = match &dev {
        Some((_, login)) => IdentityMode::Dev { login: login.clone() },
        None => IdentityMode::Tailnet(LocalApi::new(&config.socket, config.whois_timeout)),
    };
    let state = Arc::new(AppState::new(config.clone(), mode, auditor.clone()));
    let app = http::app(
        state.clone(),
        http::mcp_service(&config, shared.clone(), state.sessions(), shutdown.child_token()),
    );

    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        signals.cancel();
    });

    match dev {
        Some((addr, login)) => {
            eprintln!(
                "\n  WARNING: dev mode. Listening on loopback {addr} with the fixed identity `{login}`.\n  \
                 No Tailscale identity is checked; every audit row is marked `dev`. Never use this on a shared host.\n"
            );
            tracing::warn!(addr = %addr, identity = %login, "dev mode: fixed identity, no tailnet");
            http::listen::serve_dev(state, app, addr, shutdown).await?;
        }
        None => {
            tracing::info!(socket = %config.socket.display(), port = config.port, "starting; waiting for tailscaled");
            let service = config.service.clone().map(|svc| {
                tokio::spawn(http::listen::serve_service(
                    state.clone(),
                    app.clone(),
                    svc,
                    shutdown.clone(),
                ))
            });
            let result = http::listen::serve_tailnet(state, app, shared, shutdown.clone()).await;
            shutdown.cancel();
            if let Some(task) = service {
                task.await.context("service listener task")??;
            }
            result?;
        }
    }
    // Counted repeats of refusals whose window is still open become their summary rows.
    if let Err(e) = auditor.flush_refusals().await {
        tracing::error!(error = %e, "could not write the summaries of repeated refusals");
    }
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn whois(config: Config, addr: &str, json: bool) -> anyhow::Result<ExitCode> {
    let peer: SocketAddr = match addr.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => SocketAddr::new(
            addr.parse()
                .with_context(|| format!("`{addr}` is not an IP or IP:PORT"))?,
            0,
        ),
    };
    let api = LocalApi::new(&config.socket, config.whois_timeout);
    let who = api
        .whois(peer, None)
        .await
        .with_context(|| format!("whois {peer} via {}", config.socket.display()))?;
    let caller = Arc::new(who.caller(peer, &config.capability));
    let effective = Arc::new(policy::effective(&caller, &config.capability, &config.grants));
    let ctx = ToolContext {
        grants: effective,
        ..ToolContext::local(caller, Arc::new(config.clone()))
    };
    let view = tools::identity::describe(&ctx);
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", tools::identity::render(&view));
        // Local grants name a node by this, never by its name (`policy::Matcher::NodeId`).
        println!(
            "node id: {} (StableID; a [[grant]] names this node as match = \"node-id:{}\")",
            view.node_id, view.node_id
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn targets_check(config: &Config, id: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let registry = build_registry(config)?;
    let chosen = match id {
        Some(id) => registry.resolve(&[id])?,
        None => registry.all().to_vec(),
    };
    let checks = futures::future::join_all(chosen.iter().map(|t| t.check())).await;
    for h in &checks {
        if json {
            println!("{}", serde_json::to_string(h)?);
        } else {
            let state = if h.ok { "ok" } else { "FAILED" };
            println!(
                "{:<16} {:<7} {:<6} {:>8.1} ms  {}",
                h.target, h.kind, state, h.latency_ms, h.detail
            );
        }
    }
    Ok(if checks.iter().all(|h| h.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// How errors name the configuration: its file, or `(defaults)`.
fn config_name(config: &Config) -> String {
    config
        .source
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "(defaults)".to_string())
}

/// The target registry, with a target's bad `[target.KIND]` table or executor settings reported
/// like every other config error: the file, then the key (`target[2].ssh`), then what is wrong.
fn build_registry(config: &Config) -> anyhow::Result<Registry> {
    Registry::build(&config.targets).map_err(|e| {
        let (id, detail) = match &e {
            TargetError::Build { id, source } => (id, source.to_string()),
            TargetError::Settings { id, message, .. } => (id, message.clone()),
            _ => return anyhow::anyhow!("{}: {e}", config_name(config)),
        };
        match config.targets.iter().position(|t| &t.id == id) {
            Some(i) => anyhow::anyhow!(
                "{}: target[{i}].{}: {detail}",
                config_name(config),
                config.targets[i].kind.as_str()
            ),
            None => anyhow::anyhow!("{}: {e}", config_name(config)),
        }
    })
}

fn check_config(config: &Config) -> anyhow::Result<ExitCode> {
    let source = config
        .source
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "(no file; defaults)".into());
    println!("config:     {source}: ok");
    let listen = if config.listen.is_empty() {
        "every tailnet address of this node".to_string()
    } else {
        format!("{:?}", config.listen)
    };
    println!("listen:     {listen}, port {}", config.port);
    println!("localapi:   {}", config.socket.display());
    println!("capability: {}", config.capability);
    println!("database:   {}", config.database.display());
    let registry = build_registry(config)?;
    println!(
        "targets:    {}",
        registry
            .all()
            .iter()
            .map(|t| format!("{} ({})", t.id, t.kind.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("grants:     {} local rule(s)", config.grants.len());
    for (i, g) in config.grants.iter().enumerate() {
        println!(
            "  [{i}] {:?} → {} on {}",
            g.matcher,
            g.words.join(", "),
            g.targets.join(", ")
        );
    }
    let catalog = tools::select(&config.tools).map_err(|e| anyhow::anyhow!("{}: {e}", config_name(config)))?;
    let catalog = tools::for_targets(catalog, &registry);
    check_approval_tools(config)?;
    if config.tools.read_only {
        println!("read-only:  only read-only tools are offered");
    }
    println!(
        "tools:      {}",
        catalog.iter().map(|t| t.spec().name).collect::<Vec<_>>().join(", ")
    );
    let a = &config.approvals;
    println!(
        "approvals:  low {}, moderate {}, high {}, critical {}; {} per-tool override(s); requests expire after {} s",
        a.risk.low.as_str(),
        a.risk.moderate.as_str(),
        a.risk.high.as_str(),
        a.risk.critical.as_str(),
        a.tools.len(),
        a.expiry.as_secs()
    );
    for (tool, mode) in &a.tools {
        println!("  {tool} → {}", mode.as_str());
    }
    let l = &config.limits;
    println!(
        "limits:     {} calls in flight ({} per caller); per caller low {}/min, moderate {}/min, high {}/min, critical {}/min; {} sessions per caller",
        l.max_in_flight,
        l.max_in_flight_per_principal,
        l.rate[0].per_minute,
        l.rate[1].per_minute,
        l.rate[2].per_minute,
        l.rate[3].per_minute,
        l.max_sessions_per_principal
    );
    println!(
        "            {} connections ({} per address); refusals per address {} at once, {}/min",
        config.max_connections, config.max_connections_per_address, l.refusals.burst, l.refusals.per_minute
    );
    Ok(ExitCode::SUCCESS)
}

fn audit_cmd(config: &Config, command: AuditCommand) -> anyhow::Result<ExitCode> {
    let db = &config.database;
    let print = |records: &[audit::Record], json: bool| {
        if json {
            print!("{}", audit::render_jsonl(records));
        } else {
            print!("{}", audit::render_table(records));
        }
    };
    match command {
        AuditCommand::Tail { lines, follow, json } => {
            let mut q = Query {
                limit: lines,
                ..Query::default()
            };
            let records = audit::query_path(db, &q).with_context(|| format!("cannot read {}", db.display()))?;
            print(&records, json);
            if follow {
                let mut last = records.last().and_then(|r| r.id).unwrap_or(0);
                q.limit = 1000;
                loop {
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    q.after_id = Some(last);
                    let more = audit::query_path(db, &q)?;
                    if let Some(id) = more.last().and_then(|r| r.id) {
                        last = id;
                        print(&more, json);
                    }
                }
            }
        }
        AuditCommand::Prune { before, dry_run, json } => {
            return runtime()?.block_on(audit_prune(config, &before, dry_run, json));
        }
        AuditCommand::Verify => {
            let report = audit::verify_path(db).with_context(|| format!("cannot read {}", db.display()))?;
            println!("{report}");
            return Ok(if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        AuditCommand::Export { format: _, since } => {
            let since = since
                .map(|s| audit::parse_time(&s, chrono::Utc::now()).map_err(anyhow::Error::msg))
                .transpose()?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            audit::export_jsonl(db, since, &mut out).with_context(|| format!("cannot export {}", db.display()))?;
        }
        AuditCommand::Query { filter, limit, json } => {
            let now = chrono::Utc::now();
            let time = |s: Option<String>| -> anyhow::Result<_> {
                s.map(|s| audit::parse_time(&s, now).map_err(anyhow::Error::msg))
                    .transpose()
            };
            let decision = match filter.decision.as_deref() {
                None => None,
                Some("allow") => Some(audit::Decision::Allow),
                Some("deny") => Some(audit::Decision::Deny),
                Some(other) => bail!("--decision must be `allow` or `deny`, not `{other}`"),
            };
            let q = Query {
                principal: filter.principal,
                tool: filter.tool,
                decision,
                since: time(filter.since)?,
                until: time(filter.until)?,
                limit,
                after_id: None,
            };
            let records = audit::query_path(db, &q).with_context(|| format!("cannot read {}", db.display()))?;
            print(&records, json);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `tailopsmcp audit prune`: through an `Auditor` (its writer thread), so the delete and the
/// checkpoint are one write transaction that re-reads the chain head under SQLite's write lock:
/// safe while the server is running and writing (the busy timeout waits for its commits).
async fn audit_prune(config: &Config, before: &str, dry_run: bool, json: bool) -> anyhow::Result<ExitCode> {
    let db = &config.database;
    let now = chrono::Utc::now();
    let before = audit::parse_time(before, now).map_err(|e| anyhow::anyhow!("--before: {e}"))?;
    if before > now {
        bail!(
            "--before {} is in the future: that would delete records written from now on",
            before.to_rfc3339()
        );
    }
    let report = if dry_run {
        audit::prune_plan_path(db, before).with_context(|| format!("cannot read {}", db.display()))?
    } else {
        let auditor = Auditor::open(
            db,
            AuditOptions {
                redact_fields: config.redact_fields.clone(),
                journald: config.journald,
                refusal_window: config.refusal_window,
            },
        )
        .with_context(|| format!("cannot open the audit database {}", db.display()))?;
        auditor
            .prune(before)
            .await
            .with_context(|| format!("cannot prune {}", db.display()))?
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `approvals.tools` names must be tools this build knows.
fn check_approval_tools(config: &Config) -> anyhow::Result<()> {
    let catalog = tools::catalog();
    let names: Vec<&str> = catalog.iter().map(|t| t.spec().name).collect();
    tailopsmcp::config::approvals::check_tools(&config.approvals, &names)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config_name(config)))
}

/// `tailopsmcp approvals ...`: the host-side approver. The decider is `host:<unix user>` (the
/// real uid; whoever can write the database can decide, exactly like the server's own user),
/// and each decision is audited like a tool call by that identity.
async fn approvals_cmd(config: &Config, command: ApprovalsCommand) -> anyhow::Result<ExitCode> {
    let db = &config.database;
    let store = Approvals::open(db, config.approvals.clone())
        .with_context(|| format!("cannot open the approvals store {}", db.display()))?;
    let now = approvals::now();
    let (id, approve) = match command {
        ApprovalsCommand::List { all, limit, json } => {
            let (rows, omitted) = store.list(all, limit, |_| true)?;
            for a in &rows {
                let v = a.view(now);
                if json {
                    println!("{}", serde_json::to_string(&v)?);
                } else {
                    println!(
                        "{}  {:<8} {} from {}: {} (expires {})",
                        v.id, v.status, v.requester, v.requester_node, v.summary, v.expires
                    );
                }
            }
            if omitted > 0 && !json {
                println!("({omitted} more; raise --limit)");
            }
            return Ok(ExitCode::SUCCESS);
        }
        ApprovalsCommand::Approve { id } => (id, true),
        ApprovalsCommand::Deny { id } => (id, false),
    };
    if !approvals::valid_id(&id) {
        bail!("`{id}` is not an approval id (12 characters: letters a-z without l and o, digits 2-9)");
    }
    let (who, node) = tailopsmcp::model::host_identity();
    let auditor = Auditor::open(
        db,
        AuditOptions {
            redact_fields: config.redact_fields.clone(),
            journald: config.journald,
            refusal_window: config.refusal_window,
        },
    )
    .with_context(|| format!("cannot open the audit database {}", db.display()))?;
    let started = std::time::Instant::now();
    let before = store.get(&id)?;
    let result = store.decide(&id, approve, &who, &node);
    let verb = if approve { "approve" } else { "deny" };
    let mut rec = audit::Record::new();
    rec.principal = Some(who.clone());
    rec.node_name = Some(node.clone());
    rec.identity_source = Some(tailopsmcp::model::IdentitySource::Host.as_str().into());
    rec.method = "approvals/decide".into();
    rec.tool = Some("approvals_decide".into());
    rec.target = Some("local".into());
    rec.arguments = Some(serde_json::json!({ "id": id, "decision": verb }));
    let about = before
        .as_ref()
        .map(|a| format!("{}: {}", a.describe(), a.summary))
        .unwrap_or_else(|| format!("approval `{id}`"));
    match &result {
        Ok(_) => {
            rec.decision = audit::Decision::Allow;
            rec.outcome = audit::Outcome::Ok;
            rec.reason = Some(format!("{verb} by {who} on the server host (cli) deciding {about}"));
        }
        Err(e) => {
            rec = rec.denied(format!(
                "{verb} by {who} on the server host (cli) refused: {e}; {about}"
            ));
        }
    }
    rec.duration_ms = Some(started.elapsed().as_secs_f64() * 1e3);
    auditor.record(rec).await.context("cannot audit the decision")?;
    match result {
        Ok(a) => {
            let v = a.view(now);
            let done = if approve { "approved" } else { "denied" };
            println!("{done} {} as {who}: {}", a.describe(), a.summary);
            if approve {
                println!(
                    "It runs once when {} calls it again with the same arguments before {}.",
                    a.requester, v.expires
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("tailopsmcp: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
