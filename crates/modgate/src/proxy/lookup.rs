//! The gateway's own small reads from a route's chain, made before it decides a request: a
//! tag's `.info` (for rules limited to `commits`), a module's `list` and latest `go.mod` (for
//! retractions). Each is asked as the request itself would be: the chain's steps in order, a
//! 404/410 falling through like `,` in `GOPROXY` and other failures only from an `any-error`
//! step, the gateway's credential for each upstream and the identity headers it is told about
//! the client, never a private module path to a public upstream. Bodies are bounded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;

use crate::upstream::{Chain, Upstream};

/// How long one read may take, all chain steps together.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// `User-Agent` of the gateway's own requests.
const USER_AGENT: &str = concat!("modgate/", env!("CARGO_PKG_VERSION"));

/// What the chain answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// A 200 and its whole body.
    Body(Vec<u8>),
    /// No step has it (404/410 to the end of the chain).
    NotFound,
}

/// One step's answer.
enum Step {
    Body(Vec<u8>),
    Missing,
    Failed(String),
}

/// The identity headers an upstream receives, computed by the caller for each upstream.
pub type IdentityHeaders<'a> = &'a (dyn Fn(&Upstream) -> Vec<(http::HeaderName, String)> + Sync);

/// What makes two reads the same read: the chain (its address: the model that holds it is
/// alive while anyone reads along it), the headers each step would get, whether the route is
/// private, the path and the size bound.
type ReadKey = (usize, Vec<Vec<(String, String)>>, bool, String, usize);

/// A read in flight, whose answer every caller that asks the same meanwhile shares.
type Flight = Arc<tokio::sync::OnceCell<Result<Fetched, String>>>;

/// The reader shared by a listener's requests (its own connection pool).
pub struct Lookup {
    connector: Connector,
    flights: Mutex<HashMap<ReadKey, Flight>>,
}

impl Default for Lookup {
    fn default() -> Self {
        Lookup {
            connector: Connector::new(None),
            flights: Mutex::new(HashMap::new()),
        }
    }
}

impl Lookup {
    /// GETs the canonical GOPROXY `path` (`/<escaped module>/@v/list`) of `module` along
    /// `chain`; bodies over `max` bytes are an error. `private`: the route is private.
    ///
    /// Concurrent identical reads (same chain, same headers for every step, same path) are one
    /// read: a burst of requests that each need the same `.info`, `list` or `go.mod` before
    /// they are decided asks the upstream once, and all get its answer. Nothing is kept once
    /// the read ends: a later caller asks again.
    pub async fn get(
        &self,
        chain: &Chain,
        private: bool,
        path: &str,
        module: &str,
        headers: IdentityHeaders<'_>,
        max: usize,
    ) -> Result<Fetched, String> {
        let sent: Vec<Vec<(String, String)>> = chain
            .steps
            .iter()
            .map(|s| {
                headers(&s.upstream)
                    .into_iter()
                    .map(|(n, v)| (n.as_str().to_owned(), v))
                    .collect()
            })
            .collect();
        let key: ReadKey = (
            std::ptr::from_ref(chain) as usize,
            sent,
            private,
            path.to_owned(),
            max,
        );
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
            flights.entry(key.clone()).or_default().clone()
        };
        flight
            .get_or_init(|| self.read(chain, private, path, module, headers, max))
            .await;
        {
            let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
            if flights.get(&key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                flights.remove(&key);
            }
        }
        // The last holder takes the answer without a copy (a large body read once).
        let answer = match Arc::try_unwrap(flight) {
            Ok(cell) => cell.into_inner(),
            Err(shared) => shared.get().cloned(),
        };
        answer.unwrap_or_else(|| Err("the read was abandoned".into()))
    }

    /// [`get`](Self::get)'s one read.
    async fn read(
        &self,
        chain: &Chain,
        private: bool,
        path: &str,
        module: &str,
        headers: IdentityHeaders<'_>,
        max: usize,
    ) -> Result<Fetched, String> {
        let asked = tokio::time::timeout(READ_TIMEOUT, async {
            let mut failures = Vec::new();
            for (i, step) in chain.steps.iter().enumerate() {
                let upstream = &step.upstream;
                if private && !upstream.private {
                    return Err(format!(
                        "refusing to send a private module path to public upstream {}",
                        upstream.name
                    ));
                }
                match self
                    .ask(upstream, path, module, &headers(upstream), max)
                    .await
                {
                    Step::Body(b) => return Ok(Fetched::Body(b)),
                    Step::Missing if chain.falls_through(i, true) => continue,
                    Step::Missing => return Ok(Fetched::NotFound),
                    Step::Failed(why) => {
                        failures.push(format!("{}: {why}", upstream.name));
                        if !chain.falls_through(i, false) {
                            break;
                        }
                    }
                }
            }
            Err(failures.join("; "))
        })
        .await;
        match asked {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {}s", READ_TIMEOUT.as_secs())),
        }
    }

    /// GETs `path` of one upstream that is no module proxy (a checksum database: `/lookup/…`,
    /// `/tile/…`); bodies over `max` bytes are an error.
    pub async fn get_one(
        &self,
        upstream: &Upstream,
        path: &str,
        max: usize,
    ) -> Result<Fetched, String> {
        let asked =
            tokio::time::timeout(READ_TIMEOUT, self.ask(upstream, path, "", &[], max)).await;
        match asked {
            Ok(Step::Body(b)) => Ok(Fetched::Body(b)),
            Ok(Step::Missing) => Ok(Fetched::NotFound),
            Ok(Step::Failed(why)) => Err(format!("{}: {why}", upstream.name)),
            Err(_) => Err(format!("no answer within {}s", READ_TIMEOUT.as_secs())),
        }
    }

    /// Asks one upstream.
    async fn ask(
        &self,
        upstream: &Upstream,
        path: &str,
        module: &str,
        identity: &[(http::HeaderName, String)],
        max: usize,
    ) -> Step {
        let path = match upstream.request_path(path, Some(module)) {
            Ok(p) => p,
            Err(e) => return Step::Failed(e),
        };
        let peer = match upstream.peer().await {
            Ok(p) => p,
            Err(e) => return Step::Failed(e.to_string()),
        };
        let mut head = match RequestHeader::build("GET", path.as_bytes(), None) {
            Ok(h) => h,
            Err(e) => return Step::Failed(e.to_string()),
        };
        let mut set = || -> pingora::Result<()> {
            head.insert_header("Host", upstream.host_header.as_str())?;
            head.insert_header("User-Agent", USER_AGENT)?;
            if let Some(credential) = upstream.credential() {
                head.insert_header("Authorization", credential)?;
            }
            for (name, value) in identity {
                head.insert_header(name.clone(), value.as_str())?;
            }
            Ok(())
        };
        if let Err(e) = set() {
            return Step::Failed(e.to_string());
        }
        let (mut session, _reused) = match self.connector.get_http_session(&*peer).await {
            Ok(s) => s,
            Err(e) => return Step::Failed(e.to_string()),
        };
        let answer: pingora::Result<(u16, Option<Vec<u8>>)> = async {
            session.write_request_header(Box::new(head)).await?;
            session.finish_request_body().await?;
            session.read_response_header().await?;
            let status = session.response_header().map_or(0, |h| h.status.as_u16());
            let mut body = Vec::new();
            if status == 200 {
                while let Some(chunk) = session.read_response_body().await? {
                    let chunk: Bytes = chunk;
                    if body.len() + chunk.len() > max {
                        return Ok((status, None));
                    }
                    body.extend_from_slice(&chunk);
                }
            }
            Ok((status, Some(body)))
        }
        .await;
        match answer {
            Ok((200, Some(body))) => {
                self.connector
                    .release_http_session(session, &*peer, Some(Duration::from_secs(60)))
                    .await;
                Step::Body(body)
            }
            Ok((200, None)) => {
                session.shutdown().await;
                Step::Failed(format!("the answer is larger than {max} bytes"))
            }
            Ok((404 | 410, _)) => {
                session.shutdown().await;
                Step::Missing
            }
            Ok((status, _)) => {
                session.shutdown().await;
                Step::Failed(format!("answered {status}"))
            }
            Err(e) => {
                session.shutdown().await;
                Step::Failed(e.to_string())
            }
        }
    }
}
