//! What the running captures look like to an operator: a summary line per
//! capture every `SummaryInterval` (rates and drops since the last line,
//! [`crate::datapath::summary`]) and the per-capture part of the `STATUS=`
//! line (`eth1: 41 kpps, 0 drops`), refreshed every [`STATUS_EVERY`].
//!
//! Both read the workers' published counters from the control loop, at its
//! capture-check rhythm: nothing here runs on the packet path, and a capture
//! costs two atomic snapshots per refresh.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mio::Token;

use super::peer::Peer;
use crate::datapath::summary::{periodic_line, short_rate, Meter};
use crate::host::CaptureHost;

/// How often the captures' rates in the status line are refreshed.
pub const STATUS_EVERY: Duration = Duration::from_secs(5);
/// Captures named in the status line at most (the rest are counted).
pub const STATUS_CAPTURES: usize = 4;
/// Longest interface name shown in the status line (IFNAMSIZ − 1).
const IFNAME_MAX: usize = 15;

/// The meters of the running captures and when the next reports are due.
#[derive(Debug)]
pub struct Reports {
    summary_every: Option<Duration>,
    next_summary: Option<Instant>,
    next_status: Option<Instant>,
    /// Per capture (its connection's token): counters at the last summary
    /// line, and at the last status refresh.
    summary: BTreeMap<Token, Meter>,
    status: BTreeMap<Token, Meter>,
    /// The captures' part of the status line.
    detail: String,
}

impl Reports {
    /// Summary lines every `summary_every` (None: none).
    pub fn new(summary_every: Option<Duration>) -> Reports {
        Reports {
            summary_every,
            next_summary: None,
            next_status: None,
            summary: BTreeMap::new(),
            status: BTreeMap::new(),
            detail: String::new(),
        }
    }

    /// A reloaded `SummaryInterval`.
    pub fn set_summary_interval(&mut self, every: Option<Duration>) {
        if every != self.summary_every {
            self.summary_every = every;
            self.next_summary = None;
        }
    }

    /// The captures' part of the status line (empty when none runs).
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// Logs the summary lines and refreshes the status detail when due.
    pub fn tick<H: CaptureHost>(
        &mut self,
        now: Instant,
        peers: &BTreeMap<Token, Peer<H::Capture>>,
        host: &mut H,
    ) {
        let summary_due = match (self.summary_every, self.next_summary) {
            (None, _) => false,
            (Some(every), None) => {
                self.next_summary = Some(now + every);
                false
            }
            (Some(every), Some(at)) if at <= now => {
                self.next_summary = Some(now + every);
                true
            }
            _ => false,
        };
        let status_due = self.next_status.is_none_or(|at| at <= now);
        if status_due {
            self.next_status = Some(now + STATUS_EVERY);
        }
        if !summary_due && !status_due {
            return;
        }
        let mut shown = Vec::new();
        let mut running = 0;
        for (token, peer) in peers {
            let Some(c) = peer.counters(host) else {
                continue;
            };
            running += 1;
            let iface = peer.interface().unwrap_or("?");
            let summary = self
                .summary
                .entry(*token)
                .or_insert_with(|| Meter::new(c, now));
            if summary_due && summary.age(now) > Duration::ZERO {
                let rates = summary.advance(c, now);
                log::info!("{}", periodic_line(&peer.owner(), iface, &c, &rates));
            }
            let status = self
                .status
                .entry(*token)
                .or_insert_with(|| Meter::new(c, now));
            if status_due {
                let rates = status.advance(c, now);
                if shown.len() < STATUS_CAPTURES {
                    let name: String = iface.chars().take(IFNAME_MAX).collect();
                    let drops = c.kernel_drops + c.send_dropped;
                    shown.push(format!(
                        "{name}: {}, {drops} drop{}",
                        short_rate(rates.pps),
                        if drops == 1 { "" } else { "s" }
                    ));
                }
            }
        }
        // Captures that ended no longer count.
        self.summary
            .retain(|t, _| peers.get(t).is_some_and(|p| p.capturing()));
        self.status
            .retain(|t, _| peers.get(t).is_some_and(|p| p.capturing()));
        if status_due {
            if running > shown.len() {
                shown.push(format!("+{} more", running - shown.len()));
            }
            self.detail = shown.join("; ");
        }
    }
}
