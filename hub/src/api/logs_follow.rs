//! Following a function's output across its moves. The stream of the hub a
//! function runs on ends when the function leaves it. The hub the client
//! asked (and only that one: a forwarded follower would chain a hop per
//! move) then opens the output again where the function runs now, after
//! the last entry it passed on (`LogsRequest.from_seq`): sequence numbers
//! travel with the function, so the client sees one stream, without a gap
//! or a repeat.

use ferry_proto::v1::{LogEntry, LogsRequest};
use futures::StreamExt;

use super::{AnswerStream, HubApi};
use crate::error::HubError;

/// Openings in a row that brought no entry before the follower gives up:
/// the function keeps leaving, or its hub keeps ending the stream.
const IDLE_REOPENS: u32 = 50;
/// The pause before opening again.
const REOPEN_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);
/// How long a follower of this hub's output waits for an entry before it
/// looks whether the function has ended for good.
const ENDED_POLL: std::time::Duration = std::time::Duration::from_millis(300);

struct Follower {
    api: HubApi,
    request: LogsRequest,
    current: Option<AnswerStream<LogEntry>>,
    /// Whether `current` streams from this hub.
    here: bool,
    /// The number of the last entry passed on (entries are numbered from 0).
    last_seq: Option<u64>,
    idle_reopens: u32,
}

/// `entries` (from this hub when `here`), then, each time it ends while the
/// function runs on another hub than the one that streamed, its output
/// there after the last entry passed on.
pub(super) fn across_moves(
    api: HubApi,
    request: LogsRequest,
    entries: AnswerStream<LogEntry>,
    here: bool,
) -> AnswerStream<LogEntry> {
    let follower = Follower {
        api,
        request,
        current: Some(entries),
        here,
        last_seq: None,
        idle_reopens: 0,
    };
    futures::stream::unfold(follower, |mut follower| async move {
        loop {
            if let Some(current) = &mut follower.current {
                match current.next().await {
                    Some(Ok(entry)) if follower.last_seq.is_some_and(|last| entry.seq <= last) => continue,
                    Some(Ok(entry)) => {
                        follower.last_seq = Some(entry.seq);
                        follower.idle_reopens = 0;
                        return Some((Ok(entry), follower));
                    }
                    // An error ends the stream: nothing comes after it.
                    Some(Err(error)) => {
                        follower.current = None;
                        follower.idle_reopens = IDLE_REOPENS;
                        return Some((Err(error), follower));
                    }
                    None => follower.current = None,
                }
            }
            if !follower.moved_on() || ended_where_it_runs(&follower.api, &follower.request.name).await {
                return None;
            }
            tokio::time::sleep(REOPEN_PAUSE).await;
            follower.idle_reopens += 1;
            match follower.reopen().await {
                Ok(()) => {}
                // Removed meanwhile: the output ends with the function.
                Err(
                    HubError::FunctionNotFound { .. }
                    | HubError::Remote {
                        code: ferry_proto::ErrorCode::NotFound,
                        ..
                    },
                ) => return None,
                Err(error) => {
                    follower.idle_reopens = IDLE_REOPENS;
                    return Some((Err(error), follower));
                }
            }
        }
    })
    .boxed()
}

/// `entries` followed live from this hub, ended once the function has
/// ended for good (exited or failed: nothing more comes unless a user
/// starts it again) and no entry came for [`ENDED_POLL`]; as `docker logs
/// -f` ends with its container.
pub(super) fn until_ended(api: HubApi, name: String, entries: AnswerStream<LogEntry>) -> AnswerStream<LogEntry> {
    futures::stream::unfold(Some(entries), move |entries| {
        let (api, name) = (api.clone(), name.clone());
        async move {
            let mut entries = entries?;
            loop {
                match tokio::time::timeout(ENDED_POLL, entries.next()).await {
                    Ok(Some(entry)) => return Some((entry, Some(entries))),
                    Ok(None) => return None,
                    Err(_) if has_ended(&api, &name) => return None,
                    Err(_) => {}
                }
            }
        }
    })
    .boxed()
}

/// Whether `name` ran to its end or failed here (what `ferry resume` or a
/// redeploy, not time, would change).
fn has_ended(api: &HubApi, name: &str) -> bool {
    use crate::supervisor::Phase;
    matches!(api.supervisor().phase(name), Some(Phase::Exited | Phase::Failed))
}

/// Whether the function, asked where it runs, has ended for good.
async fn ended_where_it_runs(api: &HubApi, name: &str) -> bool {
    let asked = api.get_function(ferry_proto::v1::GetFunctionRequest { name: name.to_owned() }, 0);
    matches!(
        asked.await.map(|info| info.state()),
        Ok(ferry_proto::v1::FunctionState::Exited | ferry_proto::v1::FunctionState::Failed)
    )
}

impl Follower {
    /// Whether the stream that ended should be followed elsewhere: it came
    /// from another hub (the function may have moved here or on), or from
    /// this one and the function has left it. A stream of this hub that
    /// ended with the function still here ended for the hub's own reasons
    /// (it shuts down, the function was removed).
    fn moved_on(&self) -> bool {
        if self.idle_reopens >= IDLE_REOPENS {
            return false;
        }
        let name = &self.request.name;
        let supervisor = self.api.supervisor();
        !self.here || supervisor.forward_pointer(name).is_some() || supervisor.phase(name).is_none()
    }

    /// Opens the output again where the function runs now.
    async fn reopen(&mut self) -> Result<(), HubError> {
        let mut request = self.request.clone();
        if let Some(last) = self.last_seq {
            request.from_seq = last + 1;
            request.tail = 0;
        }
        let (entries, here) = self.api.logs_from_where_it_runs(request, 0).await?;
        tracing::debug!(function = %self.request.name, here, last_seq = ?self.last_seq, "following the output where the function runs now");
        self.current = Some(entries);
        self.here = here;
        Ok(())
    }
}
