//! `weapp sim`: the local WeChat API simulator.

use std::net::SocketAddr;

use weapp_sim::{ClockMode, SimConfig};

use super::CmdResult;

/// Arguments of `weapp sim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "WEAPP_SIM_LISTEN", default_value = "127.0.0.1:9400")]
    listen: SocketAddr,
    /// Register an app at start, as APPID:SECRET (repeatable). More can be added through
    /// `POST /_sim/apps`.
    #[arg(long = "app", value_name = "APPID:SECRET", value_parser = parse_app)]
    apps: Vec<(String, String)>,
    /// Let the clock follow wall time (codes and tokens then expire on their own). By default
    /// it is virtual and moves only through `POST /_sim/clock`.
    #[arg(long)]
    real_time: bool,
    /// Answer control calls and serve the console under this host name too (repeatable), e.g.
    /// `sim` in a docker network. Loopback names and IP addresses are always answered; other
    /// names are refused, so a web page cannot reach the control API by DNS rebinding.
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
}

fn parse_app(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((a, s))
            if !a.is_empty() && !s.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            Ok((a.to_owned(), s.to_owned()))
        }
        _ => Err(format!("expected APPID:SECRET, got `{s}`")),
    }
}

/// Runs the simulator until ctrl-c / SIGTERM.
pub async fn run(args: Args) -> CmdResult {
    let apps = args.apps.clone();
    let handle = weapp_sim::spawn(SimConfig {
        listen: Some(args.listen),
        apps: args.apps,
        clock: if args.real_time {
            ClockMode::Real
        } else {
            ClockMode::Virtual
        },
    })
    .await
    .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    for host in &args.allow_hosts {
        handle.sim().allow_host(host);
    }
    println!("{}", handle.url());
    for (appid, _) in &apps {
        eprintln!("registered app {appid}");
    }
    eprintln!(
        "weapp-sim listening; control API under {0}/_sim/, console at {0}/_sim/console (ctrl-c to stop)",
        handle.url()
    );
    super::shutdown_signal().await;
    handle.shutdown().await;
    Ok(())
}
