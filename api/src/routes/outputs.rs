//! Outputs: GET /api/v1/pipelines/{name}/matches (recent, from a bounded ring) and
//! GET /api/v1/pipelines/{name}/matches/stream (live, Server-Sent Events).

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures::stream::{self, Stream, StreamExt};
use serde_json::{json, Value};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use crate::error::{ApiPath, ApiQuery, AppError};
use crate::pipeline::{OutputFilter, OutputRecord};
use crate::state::AppState;

fn sse_event(record: &OutputRecord) -> Event {
    Event::default()
        .event(record.kind_name())
        .id(record.seq.to_string())
        .data(record.to_json_string())
}

/// The default `limit` of GET .../matches.
pub const DEFAULT_LIMIT: usize = 100;

/// The largest `limit` of GET .../matches.
pub const MAX_LIMIT: usize = 10_000;

fn check_filter(filter: &OutputFilter) -> Result<(), AppError> {
    if let Some(kind) = &filter.kind {
        if !matches!(kind.as_str(), "match" | "timeout" | "late") {
            return Err(AppError::bad_request(
                "bad_query",
                format!("kind must be match, timeout or late, not '{kind}'"),
            ));
        }
    }
    Ok(())
}

/// GET /pipelines/{name}/matches?pattern=&key=&kind=&limit=&after=: with `after`, the next
/// `limit` outputs after that `seq` (a cursor, read from the output log; `more` says whether
/// others follow, `missed` whether some after it already left the log's retention); without,
/// the most recent `limit` (of those kept in memory). Oldest first.
pub async fn recent(
    State(state): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(filter): ApiQuery<OutputFilter>,
) -> Result<Json<Value>, AppError> {
    check_filter(&filter)?;
    let pipeline = state.pipeline(&name)?;
    let limit = filter.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let page = {
        let filter = filter.clone();
        // The output log is read from disk: off the async workers.
        tokio::task::spawn_blocking(move || pipeline.recent(&filter, limit))
            .await
            .map_err(|e| AppError::internal(anyhow::anyhow!("reading outputs failed: {e}")))?
    };
    Ok(Json(json!({
        "pipeline": name,
        "outputs": page.outputs,
        "more": page.more,
        "first_seq": page.first_seq,
        "missed": page.missed,
    })))
}

/// The most outputs a reconnecting SSE client is sent from before its `Last-Event-ID` (a
/// reader further behind pages with `GET .../matches?after=`).
const REPLAY_LIMIT: usize = 100_000;

/// GET /pipelines/{name}/matches/stream: outputs as they happen, as SSE events named after their
/// kind (`match`, `timeout`, `late`), with the output's `seq` as id. A slow reader that falls
/// behind gets a `lagged` event saying how many outputs it missed. A client that reconnects with
/// `Last-Event-ID` first gets the outputs after that id that the output log still holds.
pub async fn stream(
    State(state): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(filter): ApiQuery<OutputFilter>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    check_filter(&filter)?;
    let pipeline = state.pipeline(&name)?;
    // Subscribed before the answer goes out: a client that has the headers misses nothing.
    let live = BroadcastStream::new(pipeline.subscribe());
    // A client that reconnects with `Last-Event-ID` first gets what it missed (what the output
    // log still holds), then the live outputs after those.
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let (missed, mut last) = match resume {
        Some(after) => {
            let p = pipeline.clone();
            let missed = tokio::task::spawn_blocking(move || p.records_after(after, REPLAY_LIMIT))
                .await
                .map_err(|e| AppError::internal(anyhow::anyhow!("reading outputs failed: {e}")))?;
            let last = missed.last().map_or(after, |r| r.seq);
            (missed, last)
        }
        None => (Vec::new(), 0),
    };
    drop(pipeline);
    let replay_filter = filter.clone();
    let replay = stream::iter(
        missed
            .into_iter()
            .filter(move |r| r.matches(&replay_filter))
            .map(|r| Ok::<Event, Infallible>(sse_event(&r))),
    );
    let events = live.filter_map(move |item| {
        let event = match item {
            // Already sent from the ring.
            Ok(record) if record.seq <= last => None,
            Ok(record) if record.matches(&filter) => {
                last = record.seq;
                Some(sse_event(&record))
            }
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(skipped)) => Some(
                Event::default()
                    .event("lagged")
                    .data(json!({ "skipped": skipped }).to_string()),
            ),
        };
        std::future::ready(event.map(Ok::<Event, Infallible>))
    });
    let hello = stream::once(std::future::ready(Ok::<Event, Infallible>(
        Event::default().comment("subscribed"),
    )));
    // Ends when the service shuts down, so that shutdown does not wait on open streams.
    let stream = hello
        .chain(replay)
        .chain(events)
        .take_until(state.shutdown_signal());
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
