//! Listeners and request dispatch: TLS accept and client-certificate capture, routing by host
//! and path, fault injection and logging.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::aadsts::AadError;
use crate::faults::FaultAction;
use crate::hosts::{classify, Cloud, HostKind};
use crate::imds;
use crate::log::{Listener, LoggedRequest, Route};
use crate::managed_identity::{self, IMDS_SERVER};
use crate::metadata;
use crate::reply::Reply;
use crate::resource::{self, ResourceRequest};
use crate::state::State;
use crate::tls::PeerCertificate;
use crate::token::{self, TokenRequest};
use crate::util::{entra_timestamp, new_uuid};

const MAX_BODY: usize = 1024 * 1024;

/// Facts about one connection.
struct Connection {
    listener: Listener,
    sni: Option<String>,
    peer: Option<PeerCertificate>,
}

/// The error that makes hyper close a connection without answering.
#[derive(Debug)]
struct DropConnection;

impl fmt::Display for DropConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for DropConnection {}

/// How long a listener pauses after a failed `accept`.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Logs a failed `accept` and pauses before the next one. Such errors (out of file descriptors,
/// `EMFILE`/`ENFILE`, or a connection reset before it was accepted) usually persist for a
/// moment; retrying at once would spin. The pause is the server's own (tokio time), not a
/// test's clock.
async fn accept_failed(listener: Listener, error: &std::io::Error) {
    tracing::warn!(?listener, %error, "fic-emulator: accepting a connection failed; retrying shortly");
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

/// Accepts TLS connections until the task is aborted (which aborts every connection too).
/// `kind` is [`Listener::Https`] or [`Listener::ServiceFabric`].
pub(crate) async fn serve_https(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<State>,
    kind: Listener,
) {
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                accept_failed(kind, &error).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let acceptor = acceptor.clone();
        let state = state.clone();
        connections.spawn(async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
            else {
                return;
            };
            let (_, session) = tls.get_ref();
            let connection = Arc::new(Connection {
                listener: kind,
                sni: session.server_name().map(str::to_owned),
                peer: session.peer_certificates().and_then(|chain| {
                    PeerCertificate::new(chain.iter().map(|c| c.to_vec()).collect())
                }),
            });
            serve_connection(TokioIo::new(tls), connection, state).await;
        });
    }
}

/// Accepts plain-HTTP connections for the IMDS listener.
pub(crate) async fn serve_imds(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                accept_failed(Listener::Imds, &error).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let state = state.clone();
        connections.spawn(async move {
            let connection = Arc::new(Connection {
                listener: Listener::Imds,
                sni: None,
                peer: None,
            });
            serve_connection(TokioIo::new(stream), connection, state).await;
        });
    }
}

async fn serve_connection<I>(io: I, connection: Arc<Connection>, state: Arc<State>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let state = state.clone();
        let connection = connection.clone();
        async move { handle(&state, &connection, request).await }
    });
    // A client that opens a connection and never finishes its headers is dropped.
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(io, service)
        .await;
}

fn host_of(request: &Request<Incoming>, connection: &Connection) -> String {
    let raw = request
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()))
        .or_else(|| connection.sni.clone())
        .unwrap_or_default();
    let host = match raw.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(']') => {
            name.to_owned()
        }
        _ => raw,
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Where a request goes.
enum Target {
    Token {
        tenant: String,
        cloud: Cloud,
        mtls: bool,
    },
    Metadata {
        tenant: String,
        cloud: Cloud,
        document: metadata::Document,
    },
    Resource(crate::directory::Resource),
    Imds,
    /// A hosted managed identity endpoint (App Service, Azure Arc, …): its route.
    ManagedIdentity(Route),
    NotFound,
}

impl Target {
    fn route(&self) -> Route {
        match self {
            Target::Token { .. } => Route::Token,
            Target::Metadata { .. } => Route::Metadata,
            Target::Resource(_) => Route::Resource,
            Target::Imds => Route::Imds,
            Target::ManagedIdentity(route) => *route,
            Target::NotFound => Route::NotFound,
        }
    }
}

fn target(
    state: &State,
    listener: Listener,
    host: &str,
    host_header: Option<&str>,
    path: &str,
) -> Target {
    match listener {
        Listener::Imds => {
            return match managed_identity::plain_route(path, host_header) {
                Route::Imds => Target::Imds,
                route => Target::ManagedIdentity(route),
            }
        }
        Listener::ServiceFabric => return Target::ManagedIdentity(Route::ServiceFabric),
        Listener::Https => {}
    }
    let (cloud, mtls) = match classify(host) {
        HostKind::Login { cloud, .. } => (cloud, false),
        HostKind::Mtls { cloud, .. } => (cloud, true),
        HostKind::Other => {
            return match state.directory.resource_for_host(host) {
                Some(resource) => Target::Resource(resource),
                None => Target::NotFound,
            }
        }
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let [tenant, oauth2, version, endpoint] = segments.as_slice() {
        if !tenant.is_empty()
            && oauth2.eq_ignore_ascii_case("oauth2")
            && version.eq_ignore_ascii_case("v2.0")
            && endpoint.eq_ignore_ascii_case("token")
        {
            return Target::Token {
                tenant: (*tenant).to_owned(),
                cloud,
                mtls,
            };
        }
    }
    if !mtls {
        if let Some((tenant, document)) = metadata::classify(path) {
            return Target::Metadata {
                tenant,
                cloud,
                document,
            };
        }
    }
    Target::NotFound
}

fn to_response(reply: Reply) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(reply.body));
    *response.status_mut() = hyper::StatusCode::from_u16(reply.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in reply.headers {
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            hyper::header::HeaderValue::from_str(&value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// Entra's response headers for identity routes.
fn entra_headers(
    reply: Reply,
    entry: &LoggedRequest,
    correlation_id: &str,
    trace_id: &str,
) -> Reply {
    let mut reply = reply
        .header("cache-control", "no-store, no-cache")
        .header("pragma", "no-cache")
        .header("x-ms-request-id", trace_id);
    if entry
        .header("return-client-request-id")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        reply = reply.header("client-request-id", correlation_id);
    }
    reply
}

fn error_reply(state: &State, error: &AadError, correlation_id: &str, trace_id: &str) -> Reply {
    Reply::json(
        error.status,
        &error.body(state.now(), correlation_id, trace_id),
    )
}

fn fault_reply(
    state: &State,
    route: Route,
    status: u16,
    body: Option<String>,
    retry_after: Option<String>,
    correlation_id: &str,
    trace_id: &str,
) -> Reply {
    let mut reply = match body {
        Some(body) => {
            let content_type = if body.trim_start().starts_with(['{', '[']) {
                "application/json; charset=utf-8"
            } else {
                "text/plain; charset=utf-8"
            };
            Reply::raw(status, content_type, body)
        }
        None if matches!(route, Route::Token | Route::Metadata) => {
            let (error, message) = match status {
                429 => (
                    "temporarily_unavailable",
                    "The service is temporarily unavailable (throttled). Retry the request later.",
                ),
                s if s >= 500 => (
                    "server_error",
                    "There was an error issuing a token or an issue with our sign-in service.",
                ),
                401 => (
                    "invalid_client",
                    "The client credential was refused by an injected fault.",
                ),
                _ => (
                    "invalid_request",
                    "The request was refused by an injected fault.",
                ),
            };
            let err = AadError {
                code: 50000,
                error,
                status,
                message: message.to_owned(),
            };
            error_reply(state, &err, correlation_id, trace_id)
        }
        None => Reply::json(
            status,
            &json!({ "error": format!("injected fault: status {status}") }),
        ),
    };
    if let Some(retry_after) = retry_after {
        reply = reply.header("retry-after", retry_after);
    }
    if route == Route::Imds {
        reply = reply.header("server", IMDS_SERVER);
    }
    reply
}

async fn handle(
    state: &State,
    connection: &Connection,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    let host = host_of(&request, connection);
    let (parts, body) = request.into_parts();
    let (body, too_large) = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => (collected.to_bytes(), false),
        Err(_) => (Bytes::new(), true),
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let is_form = parts
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    let form: Vec<(String, String)> = if is_form {
        url::form_urlencoded::parse(&body).into_owned().collect()
    } else {
        Vec::new()
    };
    let path = parts.uri.path().to_owned();
    let host_header = parts
        .headers
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok());
    let target = target(state, connection.listener, &host, host_header, &path);
    let mut entry = LoggedRequest {
        id: state.log.next_id(),
        at: state.now(),
        listener: connection.listener,
        route: target.route(),
        method: parts.method.as_str().to_owned(),
        host: host.clone(),
        sni: connection.sni.clone(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_owned),
        headers,
        form,
        body,
        client_cert_thumbprint: connection.peer.as_ref().map(|p| p.thumbprint.clone()),
        status: None,
        fault: None,
    };
    let correlation_id = entry
        .header("client-request-id")
        .map_or_else(new_uuid, str::to_owned);
    let trace_id = new_uuid();

    let fault = state.faults.take(&entry);
    entry.fault = fault.as_ref().map(ToString::to_string);
    let mut downgrade = false;
    match fault {
        Some(FaultAction::DropConnection) => {
            state.log.push(entry);
            return Err(DropConnection);
        }
        Some(FaultAction::Status {
            status,
            body,
            retry_after,
        }) => {
            let reply = fault_reply(
                state,
                entry.route,
                status,
                body,
                retry_after,
                &correlation_id,
                &trace_id,
            );
            entry.status = Some(reply.status);
            state.log.push(entry);
            return Ok(to_response(reply));
        }
        Some(FaultAction::MalformedBody) => {
            let mut reply = Reply::raw(
                200,
                "application/json; charset=utf-8",
                "{\"token_type\":\"Bearer\",\"access_token\":\"eyJ0eXAi",
            );
            if entry.route == Route::Imds {
                reply = reply.header("server", IMDS_SERVER);
            }
            entry.status = Some(200);
            state.log.push(entry);
            return Ok(to_response(reply));
        }
        Some(FaultAction::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(FaultAction::BearerDowngrade) => downgrade = true,
        None => {}
    }

    let reply = if too_large {
        let err = AadError::request(
            crate::codes::EMU_MALFORMED_REQUEST,
            "The request body is too large.",
        );
        error_reply(state, &err, &correlation_id, &trace_id)
    } else {
        match &target {
            Target::Token {
                tenant,
                cloud,
                mtls,
            } => {
                let request = TokenRequest {
                    method: &entry.method,
                    host: &host,
                    path: &path,
                    tenant,
                    cloud: *cloud,
                    mtls_host: *mtls,
                    form: &entry.form,
                    peer: connection.peer.as_ref(),
                    downgrade,
                };
                let reply = match token::handle(state, &request) {
                    Ok(body) => Reply::json(200, &serde_json::Value::Object(body)),
                    Err(error) => error_reply(state, &error, &correlation_id, &trace_id),
                };
                entra_headers(reply, &entry, &correlation_id, &trace_id)
            }
            Target::Metadata {
                tenant,
                cloud,
                document,
            } => {
                let reply = if entry.method.eq_ignore_ascii_case("GET") {
                    match metadata::document(state, &host, *cloud, tenant, *document) {
                        Ok(doc) => Reply::json(200, &doc),
                        Err(error) => error_reply(state, &error, &correlation_id, &trace_id),
                    }
                } else {
                    Reply::json(405, &json!({ "error": "method_not_allowed" }))
                };
                entra_headers(reply, &entry, &correlation_id, &trace_id)
            }
            Target::Resource(res) => resource::respond(
                state,
                res,
                &ResourceRequest {
                    method: &entry.method,
                    host: &host,
                    path: &path,
                    authorization: entry.header("authorization"),
                    peer: connection.peer.as_ref(),
                },
            ),
            Target::Imds => imds::respond(state, &entry),
            Target::ManagedIdentity(route) => managed_identity::respond(state, *route, &entry),
            Target::NotFound => Reply::json(
                404,
                &json!({
                    "error": "not_found",
                    "error_description": format!("The emulator serves nothing at https://{host}{path}."),
                    "timestamp": entra_timestamp(state.now()),
                }),
            ),
        }
    };
    entry.status = Some(reply.status);
    state.log.push(entry);
    Ok(to_response(reply))
}
