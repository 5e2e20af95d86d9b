//! The session layer against a recording inner service, on Tokio's paused
//! clock: every spawned request runs as far as it can before time moves, so
//! "has not reached the inner service" is a fact, not a guess.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use tower::{Layer, Service};

use http_body_util::BodyExt;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use super::*;
use crate::body;
use crate::edge::timeout::TimeoutLayer;

/// What the inner service saw, in the order it saw it.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn tags(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

type Inner = tower::util::BoxCloneSyncService<Request<Body>, Response<Body>, Error>;

/// An inner service recording each request's `x-tag` (and failing the
/// request if the session header got through), answering at once.
fn inner(seen: &Seen) -> Inner {
    let seen = seen.clone();
    tower::util::BoxCloneSyncService::new(tower::service_fn(move |req: Request<Body>| {
        let seen = seen.clone();
        async move {
            assert!(
                !req.headers().contains_key("x-session-id"),
                "the session header was forwarded"
            );
            let tag = req.headers()["x-tag"].to_str().unwrap().to_owned();
            seen.0.lock().unwrap().push(tag);
            Ok::<_, Error>(Response::new(body::full("answer")))
        }
    }))
}

fn config(max_concurrent: usize, idle_timeout: Duration) -> SessionsConfig {
    SessionsConfig {
        max_concurrent,
        idle_timeout,
        ..SessionsConfig::default()
    }
}

fn layer(max_concurrent: usize) -> (Session<Inner>, Seen) {
    let seen = Seen::default();
    let layer = SessionLayer::new(&config(max_concurrent, Duration::from_secs(300)));
    (layer.layer(inner(&seen)), seen)
}

fn request(tag: &str, session: Option<&str>, auth: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("x-tag", tag);
    if let Some(session) = session {
        builder = builder.header("x-session-id", session);
    }
    if let Some(auth) = auth {
        builder = builder.header("authorization", auth);
    }
    builder.body(body::empty()).unwrap()
}

type Answer = JoinHandle<Result<Response<Body>, Error>>;

#[expect(
    clippy::disallowed_methods,
    reason = "a test's request, awaited by the test"
)]
fn send<S>(svc: &S, req: Request<Body>) -> Answer
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error> + Clone + Send + 'static,
    S::Future: Send,
{
    tokio::spawn(svc.clone().oneshot(req))
}

/// Lets every spawned request run as far as it can (time is paused, so
/// this advances the clock only once nothing else can run).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// The answer of a request that must not be held back (a hung test would
/// spin on the paused clock: bounded instead).
async fn answer(answer: Answer) -> Response<Body> {
    match tokio::time::timeout(Duration::from_secs(3600), answer).await {
        Ok(joined) => joined.unwrap().unwrap(),
        Err(_) => panic!("no answer: the request was held back"),
    }
}

/// Reads an answer's body to its end.
async fn finish(response: Response<Body>) {
    response.into_body().collect().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn one_request_of_a_session_at_a_time_in_arrival_order() {
    let (svc, seen) = layer(1);
    let first = send(&svc, request("a", Some("s"), None));
    settle().await;
    let waiting: Vec<Answer> = ["b", "c", "d"]
        .into_iter()
        .map(|tag| send(&svc, request(tag, Some("s"), None)))
        .collect();
    settle().await;
    assert_eq!(seen.tags(), ["a"]);
    let held = answer(first).await;
    settle().await;
    assert_eq!(seen.tags(), ["a"], "the next ran before the body ended");
    // Dropping a body ends the request as surely as reading it to the end.
    drop(held);
    settle().await;
    assert_eq!(seen.tags(), ["a", "b"]);
    let mut waiting = waiting.into_iter();
    for expected in [vec!["a", "b", "c"], vec!["a", "b", "c", "d"]] {
        let next = waiting.next().unwrap();
        finish(answer(next).await).await;
        settle().await;
        assert_eq!(seen.tags(), expected);
    }
}

#[tokio::test(start_paused = true)]
async fn other_sessions_and_requests_without_one_are_not_held_back() {
    let (svc, seen) = layer(1);
    let held = answer(send(&svc, request("a", Some("s"), None))).await;
    let other = answer(send(&svc, request("other", Some("t"), None))).await;
    let none = answer(send(&svc, request("none", None, None))).await;
    assert_eq!(seen.tags(), ["a", "other", "none"]);
    drop((held, other, none));
}

#[tokio::test(start_paused = true)]
async fn sessions_belong_to_clients() {
    let (svc, seen) = layer(1);
    let a = answer(send(&svc, request("a", Some("s"), Some("Bearer sk-a")))).await;
    let b = answer(send(&svc, request("b", Some("s"), Some("Bearer sk-b")))).await;
    assert_eq!(seen.tags(), ["a", "b"], "two clients share one session id");

    // The identity the auth layer found wins over the credential headers.
    let with_identity = |tag: &str, auth: &str| {
        let mut req = request(tag, Some("s"), Some(auth));
        req.extensions_mut().insert(Identity::named("team"));
        req
    };
    let c = answer(send(&svc, with_identity("c", "Bearer sk-c"))).await;
    let d = send(&svc, with_identity("d", "Bearer sk-d"));
    settle().await;
    assert_eq!(seen.tags(), ["a", "b", "c"]);
    drop(c);
    drop(answer(d).await);
    assert_eq!(seen.tags(), ["a", "b", "c", "d"]);
    drop((a, b));
}

#[tokio::test(start_paused = true)]
async fn max_concurrent_lets_that_many_run() {
    let (svc, seen) = layer(2);
    let a = answer(send(&svc, request("a", Some("s"), None))).await;
    let b = answer(send(&svc, request("b", Some("s"), None))).await;
    let c = send(&svc, request("c", Some("s"), None));
    settle().await;
    assert_eq!(seen.tags(), ["a", "b"]);
    drop(b);
    let c = answer(c).await;
    assert_eq!(seen.tags(), ["a", "b", "c"]);
    drop((a, c));
}

#[tokio::test(start_paused = true)]
async fn header_values_are_checked() {
    let (svc, seen) = layer(1);
    let long = "x".repeat(MAX_ID_LEN + 1);
    for bad in [
        http::HeaderValue::from_static(""),
        http::HeaderValue::from_str(&long).unwrap(),
        http::HeaderValue::from_bytes("café".as_bytes()).unwrap(),
        http::HeaderValue::from_bytes(b"a\tb").unwrap(),
    ] {
        let mut req = request("bad", None, None);
        req.headers_mut().insert("x-session-id", bad.clone());
        let result = svc.clone().oneshot(req).await;
        assert!(
            matches!(
                result,
                Err(Error::Session(SessionError::InvalidHeader { .. }))
            ),
            "{bad:?} accepted"
        );
    }
    let mut twice = request("bad", Some("s"), None);
    twice
        .headers_mut()
        .append("x-session-id", http::HeaderValue::from_static("t"));
    assert!(svc.clone().oneshot(twice).await.is_err());
    assert!(seen.tags().is_empty());

    let longest = "x".repeat(MAX_ID_LEN);
    for good in [longest.as_str(), "job 7", "a-b_c.d/e:f"] {
        let response = svc.clone().oneshot(request("good", Some(good), None));
        finish(response.await.unwrap()).await;
    }
    assert_eq!(seen.tags().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_request_gives_up_just_before_its_deadline() {
    let seen = Seen::default();
    let sessions = SessionLayer::new(&config(1, Duration::from_secs(300)));
    // The real Timeout layer above, as in the stack: the client must get
    // the session's 503, not the Timeout's 504.
    let svc = TimeoutLayer::new(Duration::from_secs(1)).layer(sessions.layer(inner(&seen)));
    let held = answer(send(&svc, request("a", Some("s"), None))).await;
    let started = tokio::time::Instant::now();
    let result = send(&svc, request("b", Some("s"), None)).await.unwrap();
    let waited = started.elapsed();
    assert!(
        matches!(result, Err(Error::Session(SessionError::Busy { .. }))),
        "{result:?}"
    );
    // 1% of the 1 s left, the deadline's margin.
    assert_eq!(waited, Duration::from_millis(990));
    assert_eq!(seen.tags(), ["a"]);
    // The session works on once its running request is done.
    drop(held);
    finish(answer(send(&svc, request("c", Some("s"), None))).await).await;
    assert_eq!(seen.tags(), ["a", "c"]);
}

#[test]
fn the_margin_before_the_deadline_is_small_and_bounded() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let now = tokio::time::Instant::now();
        let margin = |left: Duration| (now + left) - give_up_at(now + left);
        assert_eq!(margin(Duration::from_secs(1)), Duration::from_millis(10));
        assert_eq!(margin(Duration::from_secs(600)), Duration::from_millis(50));
        assert_eq!(margin(Duration::ZERO), Duration::ZERO);
    });
}

#[tokio::test(start_paused = true)]
async fn a_request_that_stops_waiting_takes_no_turn() {
    let (svc, seen) = layer(1);
    let held = answer(send(&svc, request("a", Some("s"), None))).await;
    let gone = send(&svc, request("gone", Some("s"), None));
    let next = send(&svc, request("next", Some("s"), None));
    settle().await;
    // The client went away while waiting: its future is dropped.
    gone.abort();
    settle().await;
    drop(held);
    drop(answer(next).await);
    assert_eq!(seen.tags(), ["a", "next"]);
}

#[tokio::test(start_paused = true)]
async fn idle_sessions_are_forgotten_and_busy_ones_kept() {
    let seen = Seen::default();
    let layer = SessionLayer::new(&config(1, Duration::from_millis(200)));
    let sessions = layer.sessions().clone();
    let svc = layer.layer(inner(&seen));
    let long = answer(send(&svc, request("long", Some("long"), None))).await;
    finish(answer(send(&svc, request("short", Some("short"), None))).await).await;
    assert_eq!(sessions.len(), 2);
    // The background sweep runs every 100 ms.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(sessions.len(), 1, "the idle session was kept");
    // Still the same session: its next request waits.
    let next = send(&svc, request("next", Some("long"), None));
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(seen.tags(), ["long", "short"]);
    assert_eq!(sessions.len(), 1, "a busy session was forgotten");
    drop(long);
    finish(answer(next).await).await;
    assert_eq!(seen.tags(), ["long", "short", "next"]);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(sessions.is_empty());
}

#[tokio::test(start_paused = true)]
async fn without_the_background_task_new_sessions_sweep_the_map() {
    // `Sessions::new` alone starts no task.
    let sessions = Sessions::new(1, Duration::from_millis(200));
    let client = || Identity::of_credentials(&HeaderMap::new());
    drop(sessions.join(client(), "old".into()));
    let waiting = sessions.join(client(), "waiting".into());
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(sessions.join(client(), "new".into()));
    assert_eq!(sessions.len(), 2, "old forgotten, the one in use kept");
    drop(waiting);
    assert_eq!(sessions.sweep(), 0, "idle for less than idle_timeout");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sessions.sweep(), 2);
    assert!(sessions.is_empty());
}
