//! The command line: options are named and read here, each checked as it
//! comes, then checked against the subcommand and against each other.
//! Parsing does no I/O: what it needs from the system comes in `System`.

use std::ffi::OsString;
use std::path::PathBuf;

use super::System;
use super::model::{
    Backend, Command, Config, ConfigError, OutgoingSource, RulesPart, RulesRequest, SnoopConfig,
    Subcommand, err,
};
use super::values::{
    parse_cc, parse_duration, parse_level, parse_mark, parse_num, parse_rate, parse_secs,
    parse_size, parse_table, parse_target,
};
use crate::link::settings::{self, Figures};
use crate::link::{Congestion, LinkLeg};

/// The subcommands an option belongs to.
type Scope = &'static [Subcommand];

use Subcommand::{Check, Rules, Run, Status};

/// The daemon's configuration: `check` and `rules` take it too, so they
/// check, or print the setup for, exactly what `run` would use.
const DAEMON: Scope = &[Run, Check, Rules];
const RUN_ONLY: Scope = &[Run];
/// `check` asks a running pepwrt how much memory a restart would free.
const CONTROL: Scope = &[Run, Check, Status];
const BACKEND: Scope = &[Check, Rules];
const RULES_ONLY: Scope = &[Rules];
const STATUS_ONLY: Scope = &[Status];

/// Parses a command line (without the program name) for a system with
/// the given limits.
pub fn parse<I>(args: I, system: &System) -> Result<Config, ConfigError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let mut cli = Cli::default();
    let mut parser = lexopt::Parser::from_args(args);
    loop {
        let arg = match parser.next() {
            Ok(Some(arg)) => arg,
            Ok(None) => break,
            // The only error `next` returns (lexopt 0.3: a value given to
            // a switch, `--json=1`), worded as lexopt's Display does;
            // formatting its other variants costs 1.7 KB on MIPS.
            Err(lexopt::Error::UnexpectedValue { option, value }) => {
                return err(format!(
                    "unexpected argument for option '{option}': {value:?}"
                ));
            }
            Err(_) => return err("unreadable command line".to_string()),
        };
        match arg {
            lexopt::Arg::Short(c) => cli.short(c)?,
            lexopt::Arg::Long(name) => {
                // Owned, so the parser can be asked for the flag's value.
                let name = name.to_string();
                let mut value = FlagValue {
                    parser: &mut parser,
                    flag: format!("--{name}"),
                };
                cli.long(&name, &mut value)?
            }
            lexopt::Arg::Value(v) => cli.word(v)?,
        }
    }
    cli.finish(system)
}

/// The value that follows a flag, fetched on demand (switches have none).
struct FlagValue<'a> {
    parser: &'a mut lexopt::Parser,
    flag: String,
}

impl FlagValue<'_> {
    fn get(&mut self) -> Result<String, ConfigError> {
        match self.parser.value() {
            Ok(v) => v
                .into_string()
                .or_else(|_| err(format!("{}: value is not valid UTF-8", self.flag))),
            Err(_) => err(format!("{} needs a value", self.flag)),
        }
    }
}

/// Everything the command line sets, before the pieces that depend on
/// each other are checked and combined by `finish`.
#[derive(Default)]
struct Cli {
    cfg: Config,
    command: Option<Subcommand>,
    /// `pepwrt help [COMMAND]`.
    help_word: bool,
    backend: Option<Backend>,
    delete: bool,
    part: Option<RulesPart>,
    json: bool,
    snoop: SnoopConfig,
    link: Figures,
    help: bool,
    version: bool,
    /// Each option given, as written, with the subcommands it belongs to.
    given: Vec<(String, Scope)>,
}

/// Takes a long flag if it belongs to its group (and says which
/// subcommands take it), else leaves it.
type OptionGroup = fn(&mut Cli, &str, &mut FlagValue) -> Result<Option<Scope>, ConfigError>;

impl Cli {
    fn short(&mut self, c: char) -> Result<(), ConfigError> {
        match c {
            'h' => self.help = true,
            'V' => self.version = true,
            'f' => {
                self.cfg.foreground = true;
                self.given.push(("-f".to_string(), RUN_ONLY));
            }
            _ => return err(format!("unknown option -{c}")),
        }
        Ok(())
    }

    /// A command word: the first names the subcommand; after `help`, the
    /// one to explain.
    fn word(&mut self, v: OsString) -> Result<(), ConfigError> {
        let word = v.to_string_lossy();
        if self.command.is_some() {
            return err(format!("unexpected argument '{word}'"));
        }
        if word == "help" && !self.help_word {
            self.help_word = true;
            return Ok(());
        }
        self.command = Some(match word.as_ref() {
            "run" => Run,
            "check" => Check,
            "rules" => Rules,
            "status" => Status,
            _ => return err(format!("unknown command '{word}'")),
        });
        Ok(())
    }

    /// One long flag, offered to each group of options in turn.
    fn long(&mut self, name: &str, value: &mut FlagValue) -> Result<(), ConfigError> {
        let groups: [OptionGroup; 7] = [
            Cli::general,
            Cli::interception,
            Cli::pool,
            Cli::leg_option,
            Cli::link_option,
            Cli::snoop_option,
            Cli::subcommand_option,
        ];
        for group in groups {
            if let Some(scope) = group(self, name, value)? {
                self.given.push((format!("--{name}"), scope));
                return Ok(());
            }
        }
        err(format!("unknown option --{name}"))
    }

    fn general(&mut self, name: &str, value: &mut FlagValue) -> Result<Option<Scope>, ConfigError> {
        let cfg = &mut self.cfg;
        let scope = match name {
            "help" => {
                self.help = true;
                Subcommand::ALL
            }
            "version" => {
                self.version = true;
                Subcommand::ALL
            }
            "foreground" => {
                cfg.foreground = true;
                RUN_ONLY
            }
            "log-level" => {
                cfg.log_level = parse_level(&value.get()?)?;
                DAEMON
            }
            "control" => {
                cfg.control_path = PathBuf::from(value.get()?);
                CONTROL
            }
            "user" => {
                cfg.user = Some(value.get()?);
                DAEMON
            }
            _ => return Ok(None),
        };
        Ok(Some(scope))
    }

    fn interception(
        &mut self,
        name: &str,
        value: &mut FlagValue,
    ) -> Result<Option<Scope>, ConfigError> {
        let cfg = &mut self.cfg;
        let flag = format!("--{name}");
        match name {
            "queue" => cfg.queue = parse_num(&flag, &value.get()?, 0, 65535)? as u16,
            "port" => cfg.port = parse_num(&flag, &value.get()?, 1, 65535)? as u16,
            "mark" => cfg.mark = parse_mark(&value.get()?)?,
            "table" => cfg.table = parse_table(&value.get()?)?,
            "intercept" => cfg.intercept.push(parse_target(&flag, &value.get()?)?),
            "exclude-port" => cfg
                .exclude_ports
                .push(parse_num(&flag, &value.get()?, 1, 65535)? as u16),
            "no-ipv6" => cfg.ipv6 = false,
            "quic" => {
                cfg.reject_quic = match value.get()?.as_str() {
                    "pass" => false,
                    "reject" => true,
                    other => return err(format!("--quic: '{other}' is not pass or reject")),
                }
            }
            _ => return Ok(None),
        }
        Ok(Some(DAEMON))
    }

    fn pool(&mut self, name: &str, value: &mut FlagValue) -> Result<Option<Scope>, ConfigError> {
        let cfg = &mut self.cfg;
        let flag = format!("--{name}");
        match name {
            "max-conns" => cfg.max_conns = parse_num(&flag, &value.get()?, 1, 65000)? as u16,
            "buffer" => cfg.buffer_bytes = parse_size(&flag, &value.get()?, 4096, 16 << 20)?,
            "idle-timeout" => cfg.idle_timeout = parse_secs(&flag, &value.get()?)?,
            "connect-timeout" => cfg.connect_timeout = parse_secs(&flag, &value.get()?)?,
            _ => return Ok(None),
        }
        Ok(Some(DAEMON))
    }

    /// `--server-*` and `--client-*`, and the outgoing leg's own flags.
    fn leg_option(
        &mut self,
        name: &str,
        value: &mut FlagValue,
    ) -> Result<Option<Scope>, ConfigError> {
        let cfg = &mut self.cfg;
        let flag = format!("--{name}");
        match name {
            "outgoing-source" => {
                cfg.outgoing_source = match value.get()?.as_str() {
                    "client" => OutgoingSource::Client,
                    "router" => OutgoingSource::Router,
                    other => {
                        return err(format!(
                            "--outgoing-source: '{other}' is not client or router"
                        ));
                    }
                };
                return Ok(Some(DAEMON));
            }
            "server-fastopen" => {
                cfg.server_fastopen = true;
                return Ok(Some(DAEMON));
            }
            "tunnel" => {
                let name = value.get()?;
                match parse_target(&flag, &name)? {
                    crate::config::Target::Interface(i) => cfg.tunnel = Some(i),
                    _ => return err(format!("--tunnel: '{name}' is not an interface name")),
                }
                return Ok(Some(DAEMON));
            }
            "zero-rtt" => {
                cfg.zero_rtt = true;
                return Ok(Some(DAEMON));
            }
            "initcwnd" => {
                cfg.initcwnd = Some(parse_num(&flag, &value.get()?, 1, 1024)? as u16);
                return Ok(Some(DAEMON));
            }
            "client-delay" => {
                cfg.client_leg.nodelay = false;
                return Ok(Some(DAEMON));
            }
            _ => {}
        }
        let (leg, opt) = if let Some(opt) = name.strip_prefix("server-") {
            (&mut cfg.server_leg, opt)
        } else if let Some(opt) = name.strip_prefix("client-") {
            (&mut cfg.client_leg, opt)
        } else {
            return Ok(None);
        };
        match opt {
            "cc" => {
                let name = parse_cc(&flag, &value.get()?)?;
                leg.congestion = Some(Congestion::from_name(&name));
            }
            "nodelay" => leg.nodelay = true,
            "quickack" => leg.quickack = true,
            "sndbuf" => leg.sndbuf_bytes = Some(parse_size(&flag, &value.get()?, 4096, 1 << 30)?),
            "rcvbuf" => leg.rcvbuf_bytes = Some(parse_size(&flag, &value.get()?, 4096, 1 << 30)?),
            "mss" => leg.mss = Some(parse_num(&flag, &value.get()?, 88, 32767)? as u16),
            _ => return Ok(None),
        }
        Ok(Some(DAEMON))
    }

    fn link_option(
        &mut self,
        name: &str,
        value: &mut FlagValue,
    ) -> Result<Option<Scope>, ConfigError> {
        let link = &mut self.link;
        let flag = format!("--{name}");
        match name {
            "uplink" => link.uplink_bps = Some(parse_rate(&flag, &value.get()?)?),
            "downlink" => link.downlink_bps = Some(parse_rate(&flag, &value.get()?)?),
            "rtt" => link.rtt = Some(parse_duration(&flag, &value.get()?)?),
            "link-leg" => {
                link.leg = Some(match value.get()?.as_str() {
                    "server" => LinkLeg::Server,
                    "client" => LinkLeg::Client,
                    other => return err(format!("--link-leg: '{other}' is not server or client")),
                })
            }
            _ => return Ok(None),
        }
        Ok(Some(DAEMON))
    }

    fn snoop_option(
        &mut self,
        name: &str,
        value: &mut FlagValue,
    ) -> Result<Option<Scope>, ConfigError> {
        let snoop = &mut self.snoop;
        let flag = format!("--{name}");
        match name {
            "snoop" => snoop.targets.push(parse_target(&flag, &value.get()?)?),
            "snoop-queue" => snoop.queue = parse_num(&flag, &value.get()?, 0, 65535)? as u16,
            "snoop-flows" => snoop.flows = parse_num(&flag, &value.get()?, 1, 4096)? as u16,
            "snoop-cache" => {
                snoop.cache_bytes = parse_size(&flag, &value.get()?, 16 * 1024, 64 << 20)?
            }
            _ => return Ok(None),
        }
        Ok(Some(DAEMON))
    }

    /// Options of one or two subcommands: the firewall backend, the rules'
    /// part and direction, status's format.
    fn subcommand_option(
        &mut self,
        name: &str,
        value: &mut FlagValue,
    ) -> Result<Option<Scope>, ConfigError> {
        let scope = match name {
            "backend" => {
                self.backend = Some(match value.get()?.as_str() {
                    "nft" | "nftables" => Backend::Nft,
                    "iptables" | "xt" => Backend::Iptables,
                    other => return err(format!("--backend: '{other}' is not nft or iptables")),
                });
                BACKEND
            }
            "delete" => {
                self.delete = true;
                RULES_ONLY
            }
            "part" => {
                self.part = Some(match value.get()?.as_str() {
                    "all" => RulesPart::All,
                    "firewall" => RulesPart::Firewall,
                    "routing" => RulesPart::Routing,
                    other => {
                        return err(format!("--part: '{other}' is not all, firewall or routing"));
                    }
                });
                RULES_ONLY
            }
            "json" => {
                self.json = true;
                STATUS_ONLY
            }
            _ => return Ok(None),
        };
        Ok(Some(scope))
    }

    /// Refuses an option given to a subcommand it does not belong to,
    /// naming the ones it does.
    fn check_scopes(&self, sub: Subcommand) -> Result<(), ConfigError> {
        let Some((flag, scope)) = self.given.iter().find(|(_, s)| !s.contains(&sub)) else {
            return Ok(());
        };
        let names: Vec<&str> = scope.iter().map(|s| s.name()).collect();
        let owners = match names.as_slice() {
            [one] => format!("{one} only"),
            [init @ .., last] => format!("{} and {last}", init.join(", ")),
            [] => "no command".to_string(),
        };
        Err(ConfigError {
            message: format!("{flag} is an option of {owners}, not of {}", sub.name()),
            topic: Some(sub),
        })
    }

    /// Checks what depends on the subcommand or on several flags, and
    /// builds the configuration.
    fn finish(self, system: &System) -> Result<Config, ConfigError> {
        let sub = self.command.unwrap_or(Run);
        self.check_scopes(sub)?;
        let topic = self.command.filter(|_| self.help || self.help_word);
        if self.help || self.help_word {
            return Ok(Config {
                command: Command::Help(topic),
                ..Config::default()
            });
        }
        if self.version {
            return Ok(Config {
                command: Command::Version,
                ..Config::default()
            });
        }
        let mut cfg = self.cfg;
        if !self.snoop.targets.is_empty() {
            cfg.snoop = Some(self.snoop);
        }
        let backend = self.backend;
        let figures = self.link;
        cfg.link_leg = figures.leg();
        cfg.validate()?;
        // The link module checks the figures and puts its policy in force
        // on the leg over the link.
        let two_ended = cfg.tunnel.is_some();
        let legs = (&mut cfg.client_leg, &mut cfg.server_leg);
        let settled = settings::settle(figures, legs, system, two_ended);
        if let Some((link, bbr_by_link)) = settled.map_err(ConfigError::new)? {
            cfg.link = Some(link);
            cfg.bbr_by_link = bbr_by_link;
        }
        cfg.command = match sub {
            Run => Command::Run,
            Check => Command::Check { backend },
            Rules => Command::Rules(RulesRequest {
                backend: backend.unwrap_or(Backend::Nft),
                delete: self.delete,
                part: self.part.unwrap_or(RulesPart::All),
            }),
            Status => Command::Status { json: self.json },
        };
        Ok(cfg)
    }
}

impl Subcommand {
    /// Every subcommand: `--help` and `--version` go with any.
    const ALL: Scope = &[Run, Check, Rules, Status];
}
