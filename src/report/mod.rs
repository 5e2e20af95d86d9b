//! What each request used and what sluice saved, by model and client: the
//! usage and savings counters, estimated cost, and the access log line.
//!
//! The metrics layer starts a [`Tally`] for every request under `/v1/` and
//! puts it, with a [`UsageSlot`], in the request's extensions. Layers below
//! note what they know: ingress the model, auth the client, the cache a hit
//! or a coalesced answer, pruning and compression the tokens they removed;
//! the upstream layer fills the slot with the usage the upstream reported.
//! When the answer's last byte has gone (or the client left), the metrics
//! layer hands the tally to [`Finished::record`], which counts and logs it.
//!
//! Counters (labels bounded by `[usage] max_label_values`, see [`labels`]):
//! - `sluice_usage_tokens_total{model,client,kind,usage_source}`: prompt,
//!   completion and cached (prompt tokens the upstream's own cache served)
//!   tokens, as upstreams reported them (`upstream`) or, for streams that
//!   reported none, as sluice counted them (`counted`);
//! - `sluice_saved_tokens_total{model,client,reason}`: tokens not sent or
//!   not generated upstream: `pruned`, `compressed` (prompt tokens removed)
//!   and `cache`, `coalesced` (the whole usage of the answer served);
//! - `sluice_saved_requests_total{model,client,reason}`: upstream calls not
//!   made (`cache`, `coalesced`);
//! - with `[usage.prices]`: `sluice_cost_spent_total{model,client}` and
//!   `sluice_cost_saved_total{model,client,reason}` (see [`costs`]).

pub mod costs;
pub mod labels;
pub mod usage;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::Duration;

use metrics::{Counter, SharedString};

use crate::config::{Config, Price};
use crate::report::usage::{Reported, Source, UsageSlot};

pub const USAGE_TOKENS_TOTAL: &str = "sluice_usage_tokens_total";
pub const SAVED_TOKENS_TOTAL: &str = "sluice_saved_tokens_total";
pub const SAVED_REQUESTS_TOTAL: &str = "sluice_saved_requests_total";

/// The reporting settings of one config generation.
#[derive(Debug)]
pub struct Reporter {
    access_log: bool,
    stream_usage: bool,
    prices: costs::Prices,
    /// Where each request's usage record goes, when `[ledger]` is set.
    ledger: Option<Arc<crate::ledger::Ledger>>,
}

impl Reporter {
    pub fn new(config: &Config, ledger: Option<Arc<crate::ledger::Ledger>>) -> Arc<Reporter> {
        labels::MODELS.set_max(config.usage.max_label_values);
        labels::CLIENTS.set_max(config.usage.max_label_values);
        Arc::new(Reporter {
            access_log: config.log.access,
            stream_usage: config.usage.stream_usage == crate::config::StreamUsage::Ask,
            prices: costs::Prices::new(&config.usage.prices),
            ledger,
        })
    }

    /// Starts the tally of a request (and the slot its usage lands in).
    pub fn begin(self: &Arc<Self>) -> (Tally, UsageSlot) {
        let usage = UsageSlot::default();
        if self.stream_usage {
            usage.want_stream_usage();
        }
        let tally = Tally(Arc::new(Inner {
            reporter: self.clone(),
            usage: usage.clone(),
            notes: Mutex::new(Notes::default()),
        }));
        (tally, usage)
    }
}

/// One request's tally; clones share it.
#[derive(Debug, Clone)]
pub struct Tally(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    reporter: Arc<Reporter>,
    usage: UsageSlot,
    notes: Mutex<Notes>,
}

#[derive(Debug, Default)]
struct Notes {
    model: Option<SharedString>,
    price: Option<Price>,
    client: Option<SharedString>,
    /// The model and client as sent, not as bounded labels: kept only for
    /// the ledger.
    model_name: Option<String>,
    client_name: Option<String>,
    served: Served,
    pruned: u64,
    compressed: u64,
}

/// Where the answer came from, for the savings.
#[derive(Debug, Default)]
enum Served {
    #[default]
    Upstream,
    /// From the cache, with the usage the stored answer cost.
    Cache(Reported),
    /// Shared with an identical request in flight: its usage, once known.
    Coalesced(Option<UsageSlot>),
    /// Shared, with the usage of the stored answer it was served from.
    CoalescedStored(Reported),
}

impl Tally {
    fn notes(&self) -> std::sync::MutexGuard<'_, Notes> {
        self.0.notes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this request's access line is written (its marks are kept
    /// only then).
    pub fn logs_access(&self) -> bool {
        self.0.reporter.access_log
    }

    /// Whether recording this tally reads a kept answer first (a stream
    /// whose usage is counted): work for the blocking pool.
    pub fn usage_pending(&self) -> bool {
        self.0.usage.is_pending()
    }

    /// The model the request names.
    pub fn set_model(&self, model: &str) {
        let label = labels::MODELS.label(model);
        let price = self.0.reporter.prices.of(model, &label);
        let mut notes = self.notes();
        notes.model = Some(label);
        notes.price = price;
        if self.0.reporter.ledger.is_some() {
            notes.model_name = Some(model.to_owned());
        }
    }

    /// The client's identity (its key's name, or a credential's digest).
    pub fn set_client(&self, name: &str) {
        let label = labels::CLIENTS.label(name);
        let mut notes = self.notes();
        notes.client = Some(label);
        if self.0.reporter.ledger.is_some() {
            notes.client_name = Some(name.to_owned());
        }
    }

    /// Answered from the cache; `usage` is what the stored answer cost.
    pub fn served_from_cache(&self, usage: Reported, coalesced: bool) {
        self.notes().served = if coalesced {
            Served::CoalescedStored(usage)
        } else {
            Served::Cache(usage)
        };
    }

    /// Answered by following an identical request's live stream, whose
    /// usage lands in `leader` (when it is known).
    pub fn followed(&self, leader: Option<UsageSlot>) {
        self.notes().served = Served::Coalesced(leader);
    }

    /// Prompt tokens pruning removed.
    pub fn pruned(&self, tokens: u64) {
        self.notes().pruned += tokens;
    }

    /// Prompt tokens compression removed.
    pub fn compressed(&self, tokens: u64) {
        self.notes().compressed += tokens;
    }
}

/// A finished request, as the metrics layer saw it.
#[derive(Debug)]
pub struct Finished<'a> {
    pub method: &'a http::Method,
    pub path: &'a str,
    pub endpoint: &'static str,
    /// `None`: the client left before the answer's head.
    pub status: Option<http::StatusCode>,
    /// The answer's body reached its end (false: the client left during
    /// it, or it broke).
    pub ended: bool,
    pub latency: Duration,
    /// Until the answer's head.
    pub head: Option<Duration>,
    pub request_id: Option<&'a str>,
    /// What sluice's layers set in the answer's head.
    pub marks: &'a Marks,
}

/// What sluice's layers noted on an answer, kept for its access line.
pub type Marks = crate::context::Outcome;

impl Finished<'_> {
    /// Counts the request's usage and savings and logs its access line.
    pub fn record(&self, tally: &Tally) {
        let notes = std::mem::take(&mut *tally.notes());
        let reporter = &tally.0.reporter;
        let model = notes
            .model
            .clone()
            .unwrap_or_else(|| SharedString::const_str("none"));
        let client = notes
            .client
            .clone()
            .unwrap_or_else(|| SharedString::const_str(crate::context::ANONYMOUS));
        let success = self.status.is_some_and(|s| s.is_success());
        let sourced = tally.0.usage.sourced();
        let counters = handles(&model, &client);
        let mut saved: Option<(Reason, Reported)> = None;
        match &notes.served {
            Served::Upstream => {
                if let Some((used, source)) = sourced {
                    let [prompt, completion, cached] = &counters.usage[source as usize];
                    prompt.increment(used.prompt);
                    completion.increment(used.completion);
                    cached.increment(used.cached);
                    if let Some(price) = &notes.price {
                        costs::add(
                            costs::COST_SPENT_TOTAL,
                            &model,
                            &client,
                            "",
                            costs::cost(price, &used),
                        );
                    }
                }
            }
            Served::Cache(usage) => saved = Some((Reason::Cache, *usage)),
            Served::CoalescedStored(usage) => saved = Some((Reason::Coalesced, *usage)),
            Served::Coalesced(leader) => {
                let usage = leader.as_ref().and_then(UsageSlot::report);
                saved = Some((Reason::Coalesced, usage.unwrap_or_default()));
            }
        }
        // Tokens (and their cost, when priced) not spent upstream.
        let save = |reason: Reason, tokens: u64, cost: &dyn Fn(&Price) -> f64| {
            counters.saved_tokens[reason as usize].increment(tokens);
            if let Some(price) = &notes.price {
                costs::add(
                    costs::COST_SAVED_TOTAL,
                    &model,
                    &client,
                    reason.label(),
                    cost(price),
                );
            }
        };
        if success && let Some((reason, usage)) = saved {
            counters.saved_requests[reason as usize].increment(1);
            save(reason, usage.total, &|price| costs::cost(price, &usage));
        }
        // Tokens pruning and compression kept from the upstream, counted
        // when the request went there.
        if matches!(notes.served, Served::Upstream) && self.status.is_some() {
            for (reason, tokens) in [
                (Reason::Pruned, notes.pruned),
                (Reason::Compressed, notes.compressed),
            ] {
                if tokens == 0 {
                    continue;
                }
                save(reason, tokens, &|price| costs::prompt_cost(price, tokens));
            }
        }
        if reporter.access_log {
            self.log(&notes, &model, &client, sourced);
        }
        if let Some(ledger) = &reporter.ledger {
            ledger.write(self.ledger_record(&notes, sourced, saved));
        }
    }

    /// The request's one usage record: what went upstream (nothing for an
    /// answer from the cache or shared), what that cost, what was saved.
    fn ledger_record(
        &self,
        notes: &Notes,
        sourced: Option<(Reported, Source)>,
        saved: Option<(Reason, Reported)>,
    ) -> crate::ledger::Record {
        let upstream = matches!(notes.served, Served::Upstream);
        let used = sourced.filter(|_| upstream);
        let cost = used.and_then(|(used, _)| Some(costs::cost(notes.price.as_ref()?, &used)));
        let (used, source) = match used {
            Some((used, source)) => (used, Some(source.as_str())),
            None => (Reported::default(), None),
        };
        let marks = self.marks;
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        crate::ledger::Record {
            time_ms,
            request_id: self.request_id.map(str::to_owned),
            key: notes
                .client_name
                .clone()
                .unwrap_or_else(|| crate::context::ANONYMOUS.to_owned()),
            model: notes.model_name.clone(),
            response_model: None,
            upstream: marks
                .upstream
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            endpoint: self.endpoint,
            status: self.status.map(|s| s.as_u16()),
            prompt_tokens: used.prompt,
            completion_tokens: used.completion,
            cached_tokens: used.cached,
            usage_source: source,
            cost,
            cache: marks.cache.map(|c| c.as_str()),
            tokens_saved: saved.map_or(0, |(_, usage)| usage.total)
                + if upstream {
                    notes.pruned + notes.compressed
                } else {
                    0
                },
            attempts: marks.attempts,
            ttfb_ms: self.head.map(|d| d.as_secs_f64() * 1000.0),
            duration_ms: self.latency.as_secs_f64() * 1000.0,
            end: crate::ledger::End::of(self.status, self.ended),
        }
    }

    fn log(
        &self,
        notes: &Notes,
        model: &SharedString,
        client: &SharedString,
        sourced: Option<(Reported, Source)>,
    ) {
        let used = sourced.map(|(reported, _)| reported);
        let marks = self.marks;
        let status = self.status.map(|s| s.as_u16());
        let latency_ms = self.latency.as_secs_f64() * 1000.0;
        let head_ms = self.head.map(|d| d.as_secs_f64() * 1000.0);
        let served_from = match notes.served {
            Served::Upstream => None,
            _ => Some("sluice"),
        };
        tracing::info!(
            target: "sluice::access",
            request_id = self.request_id,
            method = %self.method,
            path = self.path,
            endpoint = self.endpoint,
            status,
            latency_ms,
            head_ms,
            model = notes.model.as_ref().map(|_| &**model),
            client = &**client,
            upstream = marks
                .upstream
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .or(served_from),
            attempts = marks.attempts,
            cache = marks.cache.map(|c| c.as_str()),
            prompt_tokens = used.map(|u| u.prompt),
            completion_tokens = used.map(|u| u.completion),
            cached_tokens = used.map(|u| u.cached),
            usage_source = sourced.map(|(_, source)| source.as_str()),
            tokens_original = marks.prompt_tokens.map(|p| p.original),
            tokens_sent = marks.prompt_tokens.map(|p| p.sent),
            pruned = (notes.pruned > 0).then_some(notes.pruned),
            compressed = (notes.compressed > 0).then_some(notes.compressed),
            "access"
        );
    }
}

/// One model and client's counters, registered once: a registry lookup
/// with labels costs thousands of instructions, a held handle a few.
struct Handles {
    /// By [`Source`]: prompt, completion, cached.
    usage: [[Counter; 3]; 2],
    /// By [`Reason`].
    saved_tokens: [Counter; 4],
    /// cache, coalesced.
    saved_requests: [Counter; 2],
}

/// Why tokens were saved, in the order of [`Handles::saved_tokens`].
#[derive(Debug, Clone, Copy)]
enum Reason {
    Cache,
    Coalesced,
    Pruned,
    Compressed,
}

impl Reason {
    const ALL: [Reason; 4] = [
        Reason::Cache,
        Reason::Coalesced,
        Reason::Pruned,
        Reason::Compressed,
    ];

    fn label(self) -> &'static str {
        match self {
            Reason::Cache => "cache",
            Reason::Coalesced => "coalesced",
            Reason::Pruned => "pruned",
            Reason::Compressed => "compressed",
        }
    }
}

type HandleMap = HashMap<(SharedString, SharedString), Arc<Handles>>;

static HANDLES: LazyLock<RwLock<HandleMap>> = LazyLock::new(Default::default);

fn handles(model: &SharedString, client: &SharedString) -> Arc<Handles> {
    let key = (model.clone(), client.clone());
    if let Some(handles) = HANDLES.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return handles.clone();
    }
    let labels = |name: &'static str, value: &'static str| {
        [
            ("model", model.clone()),
            ("client", client.clone()),
            (name, SharedString::const_str(value)),
        ]
    };
    let handles = Arc::new(Handles {
        usage: [Source::Upstream, Source::Counted].map(|source| {
            ["prompt", "completion", "cached"].map(|kind| {
                let [model, client, kind] = labels("kind", kind);
                let source = ("usage_source", SharedString::const_str(source.as_str()));
                metrics::counter!(USAGE_TOKENS_TOTAL, &[model, client, kind, source])
            })
        }),
        saved_tokens: Reason::ALL
            .map(|reason| metrics::counter!(SAVED_TOKENS_TOTAL, &labels("reason", reason.label()))),
        saved_requests: [Reason::Cache, Reason::Coalesced].map(|reason| {
            metrics::counter!(SAVED_REQUESTS_TOTAL, &labels("reason", reason.label()))
        }),
    });
    HANDLES
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_insert(handles)
        .clone()
}

/// Describes the counters for `/metrics`.
pub fn describe() {
    use metrics::describe_counter;
    describe_counter!(
        USAGE_TOKENS_TOTAL,
        "Tokens requests used, by model, client, kind (prompt, completion, cached: prompt tokens served by the upstream's own prompt cache) and usage_source (upstream: as the upstream reported; counted: by sluice's tokenizer, for streams that reported none)."
    );
    describe_counter!(
        SAVED_TOKENS_TOTAL,
        "Tokens not spent upstream, by model, client and reason (pruned, compressed: prompt tokens removed; cache, coalesced: the usage of answers served without an upstream call)."
    );
    describe_counter!(
        SAVED_REQUESTS_TOTAL,
        "Upstream calls not made, by model, client and reason (cache, coalesced)."
    );
}
