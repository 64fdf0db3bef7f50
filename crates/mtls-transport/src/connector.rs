//! The connector under hyper-util's pooled client: resolve (overrides first), TCP connect,
//! then, for `https`, the rustls handshake, all within the connect timeout.
//!
//! SNI and certificate verification always use the host of the URL, wherever the resolver
//! override sends the TCP connection.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::resolve::Overrides;
use crate::target::{Scheme, Target};

/// What every connector of one transport shares.
#[derive(Debug)]
pub(crate) struct ConnectorShared {
    pub(crate) overrides: Overrides,
    pub(crate) connect_timeout: Duration,
    pub(crate) system_dns: bool,
    pub(crate) connections_opened: AtomicU64,
}

/// Connects for one pool: the TLS configuration carries that pool's client identity (or none).
#[derive(Clone)]
pub(crate) struct Connector {
    tls: Arc<ClientConfig>,
    shared: Arc<ConnectorShared>,
    /// The `x5t#S256` of the pool's identity, for logs.
    identity: Option<Arc<str>>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("identity", &self.identity)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl Connector {
    pub(crate) fn new(
        tls: Arc<ClientConfig>,
        shared: Arc<ConnectorShared>,
        identity: Option<Arc<str>>,
    ) -> Self {
        Self {
            tls,
            shared,
            identity,
        }
    }

    async fn connect(self, dst: Uri) -> Result<Conn, ConnectError> {
        let target = Target::from_uri(&dst).map_err(|err| {
            ConnectError::new(ConnectErrorKind::Other, err.message().to_owned(), None)
        })?;
        let timeout = self.shared.connect_timeout;
        match tokio::time::timeout(timeout, self.establish(&target)).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::new(
                ConnectErrorKind::Timeout,
                format!(
                    "connecting to {target} took longer than the connect timeout ({} ms)",
                    timeout.as_millis()
                ),
                None,
            )),
        }
    }

    async fn establish(&self, target: &Target) -> Result<Conn, ConnectError> {
        let addrs = self.resolve(target).await?;
        let (tcp, addr) = connect_tcp(target, &addrs).await?;
        // Best effort: requests are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        let stream = match target.scheme {
            Scheme::Http => Stream::Plain(tcp),
            Scheme::Https => {
                let name = ServerName::try_from(target.host.clone()).map_err(|_| {
                    ConnectError::new(
                        ConnectErrorKind::Other,
                        format!("{target}: the host is not a valid TLS server name"),
                        None,
                    )
                })?;
                let tls = TlsConnector::from(Arc::clone(&self.tls))
                    .connect(name, tcp)
                    .await
                    .map_err(|err| {
                        ConnectError::new(
                            ConnectErrorKind::Tls,
                            format!("TLS handshake with {target} ({addr}) failed"),
                            Some(err),
                        )
                    })?;
                Stream::Tls(Box::new(tls))
            }
        };
        self.shared
            .connections_opened
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            target_url = %target,
            address = %addr,
            thumbprint = self.identity.as_deref().unwrap_or("none"),
            "opened connection"
        );
        Ok(Conn {
            io: TokioIo::new(stream),
        })
    }

    async fn resolve(&self, target: &Target) -> Result<Vec<SocketAddr>, ConnectError> {
        let default_port = target.scheme.default_port();
        if let Some(addr) = self
            .shared
            .overrides
            .lookup(&target.host, target.port, default_port)
        {
            return Ok(vec![addr]);
        }
        if let Some(ip) = target.ip() {
            return Ok(vec![SocketAddr::new(ip, target.port)]);
        }
        if !self.shared.system_dns {
            return Err(ConnectError::new(
                ConnectErrorKind::Unreachable,
                format!("{target}: no resolver override matches and system DNS is disabled"),
                None,
            ));
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|err| {
                ConnectError::new(
                    ConnectErrorKind::Unreachable,
                    format!("could not resolve {target}"),
                    Some(err),
                )
            })?
            .collect();
        if addrs.is_empty() {
            return Err(ConnectError::new(
                ConnectErrorKind::Unreachable,
                format!("{target} resolved to no address"),
                None,
            ));
        }
        Ok(addrs)
    }
}

/// Tries each address in turn; the last error wins.
async fn connect_tcp(
    target: &Target,
    addrs: &[SocketAddr],
) -> Result<(TcpStream, SocketAddr), ConnectError> {
    let mut last = None;
    for &addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => return Ok((tcp, addr)),
            Err(err) => last = Some((addr, err)),
        }
    }
    let (kind, message, source) = match last {
        Some((addr, err)) => {
            let kind = if err.kind() == io::ErrorKind::TimedOut {
                ConnectErrorKind::Timeout
            } else {
                ConnectErrorKind::Unreachable
            };
            (
                kind,
                format!("could not connect to {target} ({addr})"),
                Some(err),
            )
        }
        None => (
            ConnectErrorKind::Unreachable,
            format!("{target} has no address"),
            None,
        ),
    };
    Err(ConnectError::new(kind, message, source))
}

impl tower_service::Service<Uri> for Connector {
    type Response = Conn;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        Box::pin(self.clone().connect(dst))
    }
}

/// Why a connection could not be established.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnectErrorKind {
    /// Name resolution or TCP connect failed (refused, unreachable, no address).
    Unreachable,
    /// The connect timeout passed.
    Timeout,
    /// The TLS handshake failed (certificate, protocol, or the peer hung up during it).
    Tls,
    /// Anything else.
    Other,
}

/// The connector's error; the transport finds it in hyper-util's error chain to pick a code.
#[derive(Debug)]
pub(crate) struct ConnectError {
    pub(crate) kind: ConnectErrorKind,
    message: String,
    source: Option<io::Error>,
}

impl ConnectError {
    fn new(kind: ConnectErrorKind, message: String, source: Option<io::Error>) -> Self {
        Self {
            kind,
            message,
            source,
        }
    }

    /// The message with the cause (and a TLS error inside an I/O error) appended.
    pub(crate) fn describe(&self) -> String {
        match &self.source {
            Some(err) => format!("{}: {err}", self.message),
            None => self.message.clone(),
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for ConnectError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

/// A TCP stream, plain or under TLS.
#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One established connection, as hyper-util's client wants it.
#[derive(Debug)]
pub(crate) struct Conn {
    io: TokioIo<Stream>,
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        hyper::rt::Read::poll_read(Pin::new(&mut self.get_mut().io), cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        hyper::rt::Write::poll_write(Pin::new(&mut self.get_mut().io), cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        hyper::rt::Write::poll_flush(Pin::new(&mut self.get_mut().io), cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        hyper::rt::Write::poll_shutdown(Pin::new(&mut self.get_mut().io), cx)
    }

    fn is_write_vectored(&self) -> bool {
        hyper::rt::Write::is_write_vectored(&self.io)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        hyper::rt::Write::poll_write_vectored(Pin::new(&mut self.get_mut().io), cx, bufs)
    }
}
