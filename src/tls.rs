//! TLS for the connections to the source, with libpq's `sslmode` semantics.
//!
//! Both kinds of connection use it: the replication connection (`replconn`, which
//! sends the SSLRequest itself) and the SQL connections (`source::connect`, through
//! tokio-postgres' `MakeTlsConnect`). rustls with the *ring* provider does the TLS.
//!
//! | ssl_mode      | TLS                          | server certificate                         |
//! |---------------|------------------------------|--------------------------------------------|
//! | `disable`     | never                        | -                                          |
//! | `prefer`      | if the server agrees, else plain; any SSL failure retries plain | checked against `ssl_rootcert` when one is given |
//! | `require`     | always                       | not checked, unless `ssl_rootcert` is given (then as `verify-ca`, like libpq) |
//! | `verify-ca`   | always                       | chain to a CA of `ssl_rootcert`            |
//! | `verify-full` | always                       | chain, and the host name must match the certificate (SAN, else CN, as libpq) |
//!
//! Unix-socket hosts never use TLS (libpq ignores sslmode there too). With
//! `ssl_cert` (and `ssl_key`, by default the same file) a client certificate is
//! offered for `cert` / `clientcert=` authentication. SCRAM uses channel binding
//! (`tls-server-end-point`) when the server offers it, as libpq's default does.
//!
//! Nothing here ever puts the contents of a key file in a message.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error as TlsErr, OtherError,
    RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

// ---------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    /// libpq's default, and ours when a connector has no ssl_mode.
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

pub const SSL_MODES: &[&str] = &["disable", "prefer", "require", "verify-ca", "verify-full"];

impl SslMode {
    /// libpq's names; SynchDB's (`disabled`, `preferred`, `required`, `verify_ca`,
    /// `verify_identity`) are accepted too.
    pub fn parse(s: &str) -> Result<SslMode, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "disable" | "disabled" => Ok(SslMode::Disable),
            "prefer" | "preferred" => Ok(SslMode::Prefer),
            "require" | "required" => Ok(SslMode::Require),
            "verify-ca" | "verify_ca" => Ok(SslMode::VerifyCa),
            "verify-full" | "verify_full" | "verify_identity" => Ok(SslMode::VerifyFull),
            _ => Err(format!(
                "unknown ssl_mode \"{}\"; valid modes are: {}",
                s.trim(),
                SSL_MODES.join(", ")
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// The connection fails rather than go on without TLS.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connector's TLS settings (`ssl_*` keys of `synchdb_conninfo.data`). Paths only:
/// the files are read at each connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    /// PEM file of the CA certificate(s) the server's certificate must chain to.
    pub rootcert: Option<String>,
    /// PEM file of the client certificate (chain).
    pub cert: Option<String>,
    /// PEM file of the client certificate's private key; `cert` when not given.
    pub key: Option<String>,
}

impl TlsSettings {
    /// The mode that applies to `host`: no TLS over unix sockets.
    pub fn mode_for(&self, host: &str) -> SslMode {
        if host.starts_with('/') {
            SslMode::Disable
        } else {
            self.mode
        }
    }
}

/// `SSL connection to source server at <target> failed: <reason>`.
pub fn ssl_failed(target: &str, reason: &str) -> String {
    format!("SSL connection to source server at {target} failed: {reason}")
}

/// Why a server that answered 'N' (or an error) to the SSLRequest is refused.
pub fn no_ssl_reason(mode: SslMode) -> String {
    format!("server does not support SSL, but ssl_mode is {mode}")
}

// ---------------------------------------------------------------------------
// Loading the files and building the rustls configuration
// ---------------------------------------------------------------------------

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(what: &str, path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path)
        .map_err(|e| format!("could not read {what} file \"{path}\": {}", io_text(&e)))
}

/// io::Error text without the "(os error N)" tail.
fn io_text(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn load_certs(what: &str, path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_file(what, path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        // no details: the parser may quote a line, and the file may hold a key too
        .map_err(|_| format!("{what} file \"{path}\" is not a valid PEM file"))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} file \"{path}\" contains no certificate (expected PEM \"-----BEGIN CERTIFICATE-----\")"
        ));
    }
    Ok(certs)
}

/// libpq's rule: a key file must not be readable by others (0600 or less when it
/// belongs to us, 0640 or less when it belongs to root).
#[cfg(unix)]
fn check_key_permissions(path: &str) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(path)
        .map_err(|e| format!("could not read ssl_key file \"{path}\": {}", io_text(&e)))?;
    if !md.is_file() {
        return Err(format!("ssl_key file \"{path}\" is not a regular file"));
    }
    // SAFETY: plain syscall without arguments.
    let euid = unsafe { libc::geteuid() };
    let mode = md.mode();
    let too_open = (md.uid() == euid && mode & 0o077 != 0) || (md.uid() == 0 && mode & 0o037 != 0);
    if too_open {
        return Err(format!(
            "ssl_key file \"{path}\" has group or world access; it must have permissions u=rw (0600) \
             or less if owned by the server's user, or u=rw,g=r (0640) or less if owned by root"
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_key_permissions(_path: &str) -> Result<(), String> {
    Ok(())
}

fn load_key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    check_key_permissions(path)?;
    let pem = read_file("ssl_key", path)?;
    let has = |needle: &[u8]| pem.windows(needle.len()).any(|w| w == needle);
    if has(b"ENCRYPTED PRIVATE KEY") || has(b"Proc-Type: 4,ENCRYPTED") {
        return Err(format!(
            "ssl_key file \"{path}\" holds an encrypted private key; only unencrypted keys are supported \
             (decrypt it with: openssl pkey -in <file> -out <new file>)"
        ));
    }
    // The PEM parser's own messages may quote a line of the file: never show them.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        format!(
            "ssl_key file \"{path}\" contains no private key (expected PEM \"-----BEGIN PRIVATE KEY-----\", \
             \"-----BEGIN RSA PRIVATE KEY-----\" or \"-----BEGIN EC PRIVATE KEY-----\")"
        )
    })
}

/// A TLS client for one host, built from a connector's settings (reads the files).
pub struct Connector {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Connector {
    pub fn new(s: &TlsSettings, host: &str) -> Result<Connector, String> {
        let provider = provider();
        let verifier: Arc<dyn ServerCertVerifier> = match (&s.rootcert, s.mode) {
            (None, SslMode::VerifyCa | SslMode::VerifyFull) => {
                return Err(format!(
                    "ssl_mode {} needs ssl_rootcert, the CA certificate(s) to check the server's certificate against",
                    s.mode
                ))
            }
            // libpq: no root certificate, no verification (prefer/require only)
            (None, _) => Arc::new(AcceptAnyServerCert {
                provider: provider.clone(),
            }),
            (Some(path), mode) => {
                let roots = load_certs("ssl_rootcert", path)?;
                let mut store = RootCertStore::empty();
                for c in &roots {
                    store.add(c.clone()).map_err(|e| {
                        format!("ssl_rootcert file \"{path}\" holds a certificate that cannot be used as a CA: {e}")
                    })?;
                }
                Arc::new(CaVerifier {
                    roots: Arc::new(store),
                    root_ders: roots,
                    // verify-full checks the host; prefer/require with a root
                    // certificate verify the chain only, as libpq does
                    host: (mode == SslMode::VerifyFull).then(|| host.to_string()),
                    provider: provider.clone(),
                })
            }
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&s.cert, &s.key) {
            (None, None) => builder.with_no_client_auth(),
            (None, Some(_)) => {
                return Err(
                    "ssl_key is set but ssl_cert is not: give the client certificate too".into(),
                )
            }
            (Some(cert), key) => {
                let key_path = key.as_deref().unwrap_or(cert);
                let chain = load_certs("ssl_cert", cert)?;
                let key = load_key(key_path)?;
                builder.with_client_auth_cert(chain, key).map_err(|e| match e {
                    TlsErr::InconsistentKeys(_) => format!(
                        "the private key in ssl_key file \"{key_path}\" does not match the client certificate in ssl_cert file \"{cert}\""
                    ),
                    other => format!(
                        "cannot use the client certificate \"{cert}\" with the key \"{key_path}\": {other}"
                    ),
                })?
            }
        };
        Ok(Connector {
            config: Arc::new(config),
            server_name: server_name_for(host),
        })
    }

    /// TLS handshake over `stream` (after the server accepted the SSLRequest).
    /// Errors are worded for the user (see `describe`).
    pub async fn handshake<S>(&self, stream: S) -> Result<TlsConn<S>, String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let tls = tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(self.server_name.clone(), stream)
            .await
            .map_err(|e| describe(&e))?;
        let cb = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| tls_server_end_point(c));
        Ok(TlsConn { inner: tls, cb })
    }
}

/// SNI and the name rustls is given. An IP address sends no SNI (as libpq); a
/// name rustls cannot parse is checked by our own verifier anyway, so it goes
/// without SNI too.
fn server_name_for(host: &str) -> ServerName<'static> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return ServerName::IpAddress(ip.into());
    }
    ServerName::try_from(host.to_string())
        .unwrap_or(ServerName::IpAddress(IpAddr::from([0u8, 0, 0, 0]).into()))
}

// ---------------------------------------------------------------------------
// Error texts
// ---------------------------------------------------------------------------

/// Our host-name mismatch, carried through rustls as `CertificateError::Other`.
#[derive(Debug)]
struct HostMismatch(String);

impl fmt::Display for HostMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HostMismatch {}

/// What a failed handshake means, in words close to libpq's.
pub fn describe(e: &io::Error) -> String {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<TlsErr>()) else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => {
                "server closed the connection during the SSL handshake".to_string()
            }
            _ => format!("SSL handshake failed: {}", io_text(e)),
        };
    };
    describe_tls(tls)
}

/// The TLS failure inside an error chain (tokio-postgres wraps the io::Error of a
/// failed read), worded as `describe` does.
pub fn tls_failure_in(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<TlsErr>() {
            return Some(describe_tls(t));
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if let Some(t) = io.get_ref().and_then(|i| i.downcast_ref::<TlsErr>()) {
                return Some(describe_tls(t));
            }
        }
        cur = err.source();
    }
    None
}

fn describe_tls(e: &TlsErr) -> String {
    use CertificateError as C;
    match e {
        TlsErr::InvalidCertificate(ce) => match ce {
            C::Other(OtherError(inner)) if inner.downcast_ref::<HostMismatch>().is_some() => {
                inner.to_string()
            }
            C::UnknownIssuer => "certificate verify failed: the server certificate is not signed by a CA in ssl_rootcert \
                 (unable to get local issuer certificate)"
                .to_string(),
            C::BadSignature => {
                "certificate verify failed: bad signature in the server certificate chain".to_string()
            }
            C::Expired | C::ExpiredContext { .. } => {
                "certificate verify failed: the server certificate has expired".to_string()
            }
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "certificate verify failed: the server certificate is not yet valid".to_string()
            }
            C::Revoked => "certificate verify failed: the server certificate is revoked".to_string(),
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
                "certificate verify failed: the server certificate is not valid for TLS server authentication"
                    .to_string()
            }
            other => format!("certificate verify failed: {other}"),
        },
        TlsErr::AlertReceived(alert) => {
            use rustls::AlertDescription as A;
            match alert {
                A::CertificateRequired => {
                    "the server requires a client certificate (set ssl_cert and ssl_key)".to_string()
                }
                A::UnknownCA | A::BadCertificate | A::CertificateUnknown | A::AccessDenied => format!(
                    "the server rejected the client certificate (TLS alert \"{}\")",
                    alert_name(*alert)
                ),
                A::ProtocolVersion | A::HandshakeFailure | A::InsufficientSecurity => format!(
                    "the server and synchdb have no TLS version or cipher in common (TLS alert \"{}\")",
                    alert_name(*alert)
                ),
                other => format!("the server sent TLS alert \"{}\"", alert_name(*other)),
            }
        }
        other => format!("SSL handshake failed: {other}"),
    }
}

fn alert_name(a: rustls::AlertDescription) -> String {
    // "UnknownCA" -> "unknown ca", as OpenSSL spells them
    let dbg = format!("{a:?}");
    let mut out = String::new();
    let mut prev_lower = false;
    for ch in dbg.chars() {
        if ch.is_ascii_uppercase() && prev_lower {
            out.push(' ');
        }
        prev_lower = ch.is_ascii_lowercase();
        out.push(ch.to_ascii_lowercase());
    }
    out
}

// ---------------------------------------------------------------------------
// Server certificate verification
// ---------------------------------------------------------------------------

/// The handshake signature checks of a verifier with a `provider` field: the
/// provider's own, whatever the verifier decides about the certificate.
macro_rules! provider_signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, TlsErr> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, TlsErr> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

/// `prefer` / `require` without a root certificate: no certificate check at all
/// (libpq's behaviour), only the handshake signatures, which prove the server
/// holds the key of the certificate it sent. Used in no other mode.
#[derive(Debug)]
struct AcceptAnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsErr> {
        Ok(ServerCertVerified::assertion())
    }

    provider_signature_checks!();
}

/// `verify-ca` (host None) and `verify-full` (host Some): the chain must lead to a
/// certificate of `ssl_rootcert`; for verify-full the host must match as libpq
/// matches it. A server certificate that is itself in `ssl_rootcert` (a
/// self-signed server certificate given as the root, as PostgreSQL's documentation
/// suggests) is trusted as is, within its validity period, as OpenSSL does.
#[derive(Debug)]
struct CaVerifier {
    roots: Arc<RootCertStore>,
    root_ders: Vec<CertificateDer<'static>>,
    host: Option<String>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for CaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsErr> {
        let facts = CertFacts::parse(end_entity.as_ref())
            .ok_or(TlsErr::InvalidCertificate(CertificateError::BadEncoding))?;
        if self
            .root_ders
            .iter()
            .any(|r| r.as_ref() == end_entity.as_ref())
        {
            let t = now.as_secs() as i64;
            if t < facts.not_before {
                return Err(TlsErr::InvalidCertificate(CertificateError::NotValidYet));
            }
            if t > facts.not_after {
                return Err(TlsErr::InvalidCertificate(CertificateError::Expired));
            }
        } else {
            let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &parsed,
                &self.roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        if let Some(host) = &self.host {
            check_host(&facts, host).map_err(|m| {
                TlsErr::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                    HostMismatch(m),
                ))))
            })?;
        }
        Ok(ServerCertVerified::assertion())
    }

    provider_signature_checks!();
}

// ---------------------------------------------------------------------------
// The few certificate fields we need (DER)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum AltName {
    Dns(Vec<u8>),
    Ip(Vec<u8>),
}

/// What libpq-style host matching, channel binding and the validity check read
/// from a certificate.
#[derive(Debug, Default)]
struct CertFacts {
    /// OID (content bytes) of the certificate's signature algorithm.
    sig_alg: Vec<u8>,
    /// First commonName of the subject, raw bytes.
    common_name: Option<Vec<u8>>,
    /// dNSName and iPAddress entries of subjectAltName, in order.
    alt_names: Vec<AltName>,
    not_before: i64,
    not_after: i64,
}

/// One DER TLV: (tag, content, rest). Single-byte tags, definite lengths.
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&l0, rest) = rest.split_first()?;
    let (len, rest) = if l0 < 0x80 {
        (usize::from(l0), rest)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

fn expect(b: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, content, rest) = tlv(b)?;
    (t == tag).then_some((content, rest))
}

const SEQ: u8 = 0x30;
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

impl CertFacts {
    fn parse(der: &[u8]) -> Option<CertFacts> {
        let (cert, _) = expect(der, SEQ)?;
        let (tbs, rest) = expect(cert, SEQ)?;
        let (sig_alg, _) = expect(rest, SEQ)?;
        let (oid, _) = expect(sig_alg, 0x06)?;
        let mut f = CertFacts {
            sig_alg: oid.to_vec(),
            ..CertFacts::default()
        };
        let mut r = tbs;
        let (t, _, rest) = tlv(r)?;
        if t == 0xa0 {
            r = rest; // explicit version
        }
        let (_, r) = expect(r, 0x02)?; // serialNumber
        let (_, r) = expect(r, SEQ)?; // signature
        let (_, r) = expect(r, SEQ)?; // issuer
        let (validity, r) = expect(r, SEQ)?;
        let (t1, nb, vr) = tlv(validity)?;
        let (t2, na, _) = tlv(vr)?;
        f.not_before = asn1_time(t1, nb)?;
        f.not_after = asn1_time(t2, na)?;
        let (subject, r) = expect(r, SEQ)?;
        f.common_name = first_cn(subject);
        let (_, mut r) = expect(r, SEQ)?; // subjectPublicKeyInfo
        while let Some((t, content, rest)) = tlv(r) {
            if t == 0xa3 {
                let (exts, _) = expect(content, SEQ)?;
                f.alt_names = alt_names(exts)?;
            }
            r = rest;
        }
        Some(f)
    }
}

fn first_cn(mut name: &[u8]) -> Option<Vec<u8>> {
    while let Some((_, rdn, rest)) = tlv(name) {
        let mut set = rdn;
        while let Some((_, atv, more)) = tlv(set) {
            if let Some((oid, v)) = expect(atv, 0x06) {
                if oid == OID_CN {
                    return tlv(v).map(|(_, s, _)| s.to_vec());
                }
            }
            set = more;
        }
        name = rest;
    }
    None
}

fn alt_names(mut exts: &[u8]) -> Option<Vec<AltName>> {
    let mut out = Vec::new();
    while let Some((_, ext, rest)) = tlv(exts) {
        let (oid, mut body) = expect(ext, 0x06)?;
        if oid == OID_SAN {
            if let Some((0x01, _, after_bool)) = tlv(body) {
                body = after_bool; // critical flag
            }
            let (value, _) = expect(body, 0x04)?;
            let (mut names, _) = expect(value, SEQ)?;
            while let Some((t, v, more)) = tlv(names) {
                match t {
                    0x82 => out.push(AltName::Dns(v.to_vec())),
                    0x87 => out.push(AltName::Ip(v.to_vec())),
                    _ => {}
                }
                names = more;
            }
        }
        exts = rest;
    }
    Some(out)
}

/// UTCTime / GeneralizedTime ("...Z") as unix seconds.
fn asn1_time(tag: u8, v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = s.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, s.get(2..)?)
        }
        0x18 => (s.get(..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    let num = |a: usize| -> Option<i64> { rest.get(a..a + 2)?.parse().ok() };
    let (mo, d, h, mi) = (num(0)?, num(2)?, num(4)?, num(6)?);
    let sec = if rest.len() >= 10 { num(8)? } else { 0 };
    // days from civil (Howard Hinnant)
    let y = if mo <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3_600 + mi * 60 + sec)
}

// ---------------------------------------------------------------------------
// Host name check (libpq's, fe-secure-common.c / fe-secure-openssl.c)
// ---------------------------------------------------------------------------

/// `*.example.com` matches `db.example.com`, not `a.db.example.com`.
fn wildcard_match(pattern: &[u8], host: &str) -> bool {
    let h = host.as_bytes();
    if pattern.len() < 3 || !pattern.starts_with(b"*.") || pattern.len() > h.len() {
        return false;
    }
    let suffix = &pattern[1..];
    let start = h.len() - suffix.len();
    h[start..].eq_ignore_ascii_case(suffix) && !h[..start].contains(&b'.')
}

fn name_matches(name: &[u8], host: &str) -> bool {
    !name.contains(&0)
        && (name.eq_ignore_ascii_case(host.as_bytes())
            || (name.first() == Some(&b'*') && wildcard_match(name, host)))
}

fn ip_matches(ip: &[u8], host: &str) -> bool {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => ip == a.octets(),
        Ok(IpAddr::V6(a)) => ip == a.octets(),
        Err(_) => false,
    }
}

fn ip_text(ip: &[u8]) -> String {
    match ip.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(ip).unwrap_or_default()).to_string(),
        16 => IpAddr::from(<[u8; 16]>::try_from(ip).unwrap_or_default()).to_string(),
        _ => "(invalid IP address)".to_string(),
    }
}

/// The subjectAltName entries are checked; the commonName only when there is no
/// entry of the host's kind (DNS name or IP address).
fn check_host(f: &CertFacts, host: &str) -> Result<(), String> {
    let host_is_ip = host.parse::<IpAddr>().is_ok();
    let mut examined = 0usize;
    let mut first: Option<String> = None;
    let mut check_cn = true;
    for n in &f.alt_names {
        examined += 1;
        let (is_ip, ok, text) = match n {
            AltName::Dns(d) => (
                false,
                name_matches(d, host),
                String::from_utf8_lossy(d).into_owned(),
            ),
            AltName::Ip(ip) => (true, ip_matches(ip, host), ip_text(ip)),
        };
        if is_ip == host_is_ip {
            check_cn = false;
        }
        first.get_or_insert(text);
        if ok {
            return Ok(());
        }
    }
    if check_cn {
        if let Some(cn) = &f.common_name {
            examined += 1;
            first.get_or_insert_with(|| String::from_utf8_lossy(cn).into_owned());
            if name_matches(cn, host) {
                return Ok(());
            }
        }
    }
    let first = first.unwrap_or_default();
    Err(match examined {
        0 => "could not get server's host name from server certificate".to_string(),
        1 => format!("server certificate for \"{first}\" does not match host name \"{host}\""),
        n => format!(
            "server certificate for \"{first}\" (and {} other name{}) does not match host name \"{host}\"",
            n - 1,
            if n == 2 { "" } else { "s" }
        ),
    })
}

// ---------------------------------------------------------------------------
// Channel binding (RFC 5929 tls-server-end-point, as PostgreSQL computes it)
// ---------------------------------------------------------------------------

/// Hash of the server certificate with the hash of its signature algorithm (MD5
/// and SHA-1 become SHA-256). None for algorithms without one (Ed25519, RSA-PSS,
/// ...): then SCRAM goes without channel binding.
fn tls_server_end_point(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    use ring::digest;
    let f = CertFacts::parse(cert.as_ref())?;
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    let alg = match f.sig_alg.as_slice() {
        [p @ .., 4 | 5 | 11] if p == RSA => &digest::SHA256, // md5, sha1, sha256 WithRSA
        [p @ .., 12] if p == RSA => &digest::SHA384,
        [p @ .., 13] if p == RSA => &digest::SHA512,
        [p @ .., 1] if p == ECDSA => &digest::SHA256, // ecdsa-with-SHA1
        [p @ .., 3, 2] if p == ECDSA => &digest::SHA256,
        [p @ .., 3, 3] if p == ECDSA => &digest::SHA384,
        [p @ .., 3, 4] if p == ECDSA => &digest::SHA512,
        _ => return None,
    };
    Some(digest::digest(alg, cert.as_ref()).as_ref().to_vec())
}

// ---------------------------------------------------------------------------
// The encrypted stream, and tokio-postgres' TLS traits over it
// ---------------------------------------------------------------------------

/// A TLS connection to the source, with its channel-binding data.
pub struct TlsConn<S> {
    inner: tokio_rustls::client::TlsStream<S>,
    cb: Option<Vec<u8>>,
}

impl<S> TlsConn<S> {
    /// `tls-server-end-point` data for SCRAM-SHA-256-PLUS, when available.
    pub fn channel_binding(&self) -> Option<Vec<u8>> {
        self.cb.clone()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsConn<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsConn<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for TlsConn<S> {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        match &self.cb {
            Some(h) => tokio_postgres::tls::ChannelBinding::tls_server_end_point(h.clone()),
            None => tokio_postgres::tls::ChannelBinding::none(),
        }
    }
}

/// What happened to TLS during one tokio-postgres connection attempt: whether the
/// server accepted the SSLRequest (the handshake started) and how it failed.
#[derive(Debug, Default)]
pub struct Attempt {
    started: AtomicBool,
    error: Mutex<Option<String>>,
}

impl Attempt {
    pub fn started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }

    pub fn error(&self) -> Option<String> {
        self.error.lock().clone()
    }
}

#[derive(Debug)]
pub struct HandshakeError(String);

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HandshakeError {}

/// tokio-postgres' `MakeTlsConnect` over our `Connector`.
#[derive(Clone)]
pub struct MakeTls {
    connector: Arc<Connector>,
    attempt: Arc<Attempt>,
}

impl MakeTls {
    pub fn new(connector: Arc<Connector>, attempt: Arc<Attempt>) -> MakeTls {
        MakeTls { connector, attempt }
    }
}

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for MakeTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsConn<S>;
    type TlsConnect = MakeTls;
    type Error = HandshakeError;

    fn make_tls_connect(&mut self, _domain: &str) -> Result<MakeTls, HandshakeError> {
        // the connector already knows the host it was built for
        Ok(self.clone())
    }
}

impl<S> tokio_postgres::tls::TlsConnect<S> for MakeTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsConn<S>;
    type Error = HandshakeError;
    type Future = Pin<Box<dyn Future<Output = Result<TlsConn<S>, HandshakeError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            self.attempt.started.store(true, Ordering::SeqCst);
            self.connector.handshake(stream).await.map_err(|m| {
                *self.attempt.error.lock() = Some(m.clone());
                HandshakeError(m)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, SanType,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Ca {
        cert_pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// (cert PEM, key PEM, cert DER)
    fn leaf(
        ca: &Ca,
        cn: &str,
        sans: &[&str],
        client: bool,
    ) -> (String, String, CertificateDer<'static>) {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.subject_alt_names = sans
            .iter()
            .map(|s| match s.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*s).try_into().unwrap()),
            })
            .collect();
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &ca.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    }

    struct Dir(std::path::PathBuf);

    impl Dir {
        fn new() -> Dir {
            let mut b = [0u8; 8];
            getrandom::getrandom(&mut b).unwrap();
            let p =
                std::env::temp_dir().join(format!("synchdb-tls-{:016x}", u64::from_le_bytes(b)));
            std::fs::create_dir(&p).unwrap();
            Dir(p)
        }

        fn file(&self, name: &str, body: &str, mode: u32) -> String {
            use std::os::unix::fs::PermissionsExt;
            let p = self.0.join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p.to_string_lossy().into_owned()
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Runs one handshake against an in-process rustls server; returns the client's
    /// result and whether the server saw a client certificate.
    async fn handshake(
        settings: &TlsSettings,
        host: &str,
        server_cert: &str,
        server_key: &str,
        client_ca: Option<&str>,
    ) -> (Result<Option<Vec<u8>>, String>, bool) {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(server_cert.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(server_key.as_bytes()).unwrap();
        let prov = provider();
        let b = rustls::ServerConfig::builder_with_provider(prov.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let b = match client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                    roots.add(c.unwrap()).unwrap();
                }
                b.with_client_cert_verifier(
                    rustls::server::WebPkiClientVerifier::builder_with_provider(
                        Arc::new(roots),
                        prov,
                    )
                    .allow_unauthenticated()
                    .build()
                    .unwrap(),
                )
            }
            None => b.with_no_client_auth(),
        };
        let server_cfg = Arc::new(b.with_single_cert(certs, key).unwrap());
        let (c, s) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(server_cfg);
            match acceptor.accept(s).await {
                Ok(mut tls) => {
                    let had_cert = tls.get_ref().1.peer_certificates().is_some();
                    let mut b = [0u8; 4];
                    if tls.read_exact(&mut b).await.is_ok() {
                        let _ = tls.write_all(b"pong").await;
                        let _ = tls.flush().await;
                    }
                    had_cert
                }
                Err(_) => false,
            }
        });
        let r = async {
            let conn = Connector::new(settings, host)?;
            let mut tls = conn.handshake(c).await?;
            // with TLS 1.3 a rejected client certificate shows on the first read
            tls.write_all(b"ping").await.map_err(|e| describe(&e))?;
            tls.flush().await.map_err(|e| describe(&e))?;
            let mut b = [0u8; 4];
            tls.read_exact(&mut b).await.map_err(|e| describe(&e))?;
            assert_eq!(&b, b"pong");
            Ok(tls.channel_binding())
        }
        .await;
        let had_cert = server.await.unwrap_or(false);
        (r, had_cert)
    }

    fn settings(mode: SslMode, rootcert: Option<&str>) -> TlsSettings {
        TlsSettings {
            mode,
            rootcert: rootcert.map(str::to_string),
            cert: None,
            key: None,
        }
    }

    #[test]
    fn modes_parse_with_synchdb_aliases() {
        assert_eq!(
            SslMode::parse(" Verify-Full ").unwrap(),
            SslMode::VerifyFull
        );
        assert_eq!(
            SslMode::parse("verify_identity").unwrap(),
            SslMode::VerifyFull
        );
        assert_eq!(SslMode::parse("verify_ca").unwrap(), SslMode::VerifyCa);
        assert_eq!(SslMode::parse("preferred").unwrap(), SslMode::Prefer);
        assert_eq!(SslMode::parse("disabled").unwrap(), SslMode::Disable);
        assert_eq!(SslMode::parse("required").unwrap(), SslMode::Require);
        let e = SslMode::parse("allow").unwrap_err();
        assert!(
            e.contains("disable, prefer, require, verify-ca, verify-full"),
            "{e}"
        );
        assert_eq!(SslMode::default(), SslMode::Prefer);
        assert!(SslMode::VerifyCa.requires_tls() && !SslMode::Prefer.requires_tls());
        let s = settings(SslMode::VerifyFull, None);
        assert_eq!(s.mode_for("/tmp"), SslMode::Disable);
        assert_eq!(s.mode_for("db"), SslMode::VerifyFull);
    }

    #[test]
    fn cert_facts_and_libpq_host_matching() {
        let ca = ca("test ca");
        let (_, _, der) = leaf(
            &ca,
            "server cn",
            &["localhost", "127.0.0.1", "*.example.com"],
            false,
        );
        let f = CertFacts::parse(der.as_ref()).unwrap();
        assert_eq!(f.common_name.as_deref(), Some(&b"server cn"[..]));
        assert_eq!(f.alt_names.len(), 3);
        assert!(f.not_before < f.not_after);
        assert!(check_host(&f, "localhost").is_ok());
        assert!(check_host(&f, "LOCALHOST").is_ok());
        assert!(check_host(&f, "127.0.0.1").is_ok());
        assert!(check_host(&f, "db.example.com").is_ok());
        assert!(check_host(&f, "a.db.example.com").is_err());
        // the CN is not looked at when there are SANs of the host's kind
        let e = check_host(&f, "server cn").unwrap_err();
        assert_eq!(
            e,
            "server certificate for \"localhost\" (and 2 other names) does not match host name \"server cn\""
        );
        let e = check_host(&f, "127.0.0.2").unwrap_err();
        assert!(e.contains("(and 2 other names)"), "{e}");

        // CN only (PostgreSQL's documented self-signed certificate): CN is used
        let (_, _, der) = leaf(&ca, "db.internal", &[], false);
        let f = CertFacts::parse(der.as_ref()).unwrap();
        assert!(f.alt_names.is_empty());
        assert!(check_host(&f, "db.internal").is_ok());
        assert_eq!(
            check_host(&f, "other").unwrap_err(),
            "server certificate for \"db.internal\" does not match host name \"other\""
        );
        // a DNS SAN does not stop the CN check for an IP host, and vice versa
        let (_, _, der) = leaf(&ca, "10.1.2.3", &["db.internal"], false);
        let f = CertFacts::parse(der.as_ref()).unwrap();
        assert!(check_host(&f, "10.1.2.3").is_ok());
        assert!(check_host(&f, "10.1.2.4").is_err());

        assert!(wildcard_match(b"*.a.b", "x.a.b"));
        assert!(!wildcard_match(b"*.a.b", "a.b"));
        assert!(!name_matches(b"a\0b", "a"));
        assert_eq!(asn1_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(asn1_time(0x18, b"20000301000000Z"), Some(951_868_800));
        assert_eq!(asn1_time(0x17, b"491231235959Z"), Some(2_524_607_999));
        assert!(tls_server_end_point(&der).is_some_and(|h| h.len() == 32));
    }

    #[tokio::test]
    async fn modes_against_an_in_process_server() {
        let dir = Dir::new();
        let ca1 = ca("ca one");
        let ca2 = ca("ca two");
        let (scert, skey, _) = leaf(&ca1, "srv", &["localhost", "127.0.0.1"], false);
        let ca1_path = dir.file("ca1.crt", &ca1.cert_pem, 0o644);
        let ca2_path = dir.file("ca2.crt", &ca2.cert_pem, 0o644);

        // require without a root certificate: anything goes, channel binding works
        let (r, _) = handshake(
            &settings(SslMode::Require, None),
            "127.0.0.1",
            &scert,
            &skey,
            None,
        )
        .await;
        assert_eq!(r.unwrap().map(|h| h.len()), Some(32));
        // prefer / require with a root certificate check the chain (libpq)
        for m in [
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            let (r, _) = handshake(
                &settings(m, Some(&ca2_path)),
                "127.0.0.1",
                &scert,
                &skey,
                None,
            )
            .await;
            let e = r.unwrap_err();
            assert!(e.starts_with("certificate verify failed: the server certificate is not signed by a CA in ssl_rootcert"), "{m}: {e}");
        }
        for host in ["127.0.0.1", "localhost"] {
            let (r, _) = handshake(
                &settings(SslMode::VerifyFull, Some(&ca1_path)),
                host,
                &scert,
                &skey,
                None,
            )
            .await;
            assert!(r.is_ok(), "{host}: {r:?}");
        }
        let (r, _) = handshake(
            &settings(SslMode::VerifyFull, Some(&ca1_path)),
            "127.0.0.2",
            &scert,
            &skey,
            None,
        )
        .await;
        assert_eq!(
            r.unwrap_err(),
            "server certificate for \"localhost\" (and 1 other name) does not match host name \"127.0.0.2\""
        );
        // verify-ca does not look at the name
        let (r, _) = handshake(
            &settings(SslMode::VerifyCa, Some(&ca1_path)),
            "127.0.0.2",
            &scert,
            &skey,
            None,
        )
        .await;
        assert!(r.is_ok(), "{r:?}");

        // a self-signed server certificate given as its own root
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, "selfsigned.test");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let k = KeyPair::generate().unwrap();
        let selfsigned = p.self_signed(&k).unwrap();
        let ss_path = dir.file("ss.crt", &selfsigned.pem(), 0o644);
        let (r, _) = handshake(
            &settings(SslMode::VerifyFull, Some(&ss_path)),
            "selfsigned.test",
            &selfsigned.pem(),
            &k.serialize_pem(),
            None,
        )
        .await;
        assert!(r.is_ok(), "{r:?}");
        let (r, _) = handshake(
            &settings(SslMode::VerifyFull, Some(&ss_path)),
            "127.0.0.1",
            &selfsigned.pem(),
            &k.serialize_pem(),
            None,
        )
        .await;
        assert_eq!(
            r.unwrap_err(),
            "server certificate for \"selfsigned.test\" does not match host name \"127.0.0.1\""
        );

        // client certificates: a bundle (cert + key in one file), separate files,
        // a key that does not match, a key readable by others, an encrypted key
        let (ccert, ckey, _) = leaf(&ca1, "synchdb_cert", &[], true);
        let bundle = dir.file("client.pem", &format!("{ccert}{ckey}"), 0o600);
        let cert_only = dir.file("client.crt", &ccert, 0o644);
        let key_only = dir.file("client.key", &ckey, 0o600);
        let mut s = settings(SslMode::VerifyFull, Some(&ca1_path));
        s.cert = Some(bundle.clone());
        let (r, had) = handshake(&s, "localhost", &scert, &skey, Some(&ca1.cert_pem)).await;
        assert!(r.is_ok() && had, "{r:?}");
        s.cert = Some(cert_only.clone());
        s.key = Some(key_only.clone());
        let (r, had) = handshake(&s, "localhost", &scert, &skey, Some(&ca1.cert_pem)).await;
        assert!(r.is_ok() && had, "{r:?}");
        // a client certificate the server's CA did not sign
        let (c2, k2, _) = leaf(&ca2, "synchdb_cert", &[], true);
        s.cert = Some(dir.file("c2.crt", &c2, 0o644));
        s.key = Some(dir.file("c2.key", &k2, 0o600));
        let (r, _) = handshake(&s, "localhost", &scert, &skey, Some(&ca1.cert_pem)).await;
        let e = r.unwrap_err();
        assert!(
            e.starts_with("the server rejected the client certificate"),
            "{e}"
        );

        s.cert = Some(cert_only.clone());
        s.key = Some(dir.file(
            "other.key",
            &KeyPair::generate().unwrap().serialize_pem(),
            0o600,
        ));
        let e = Connector::new(&s, "localhost").unwrap_err();
        assert!(
            e.starts_with("the private key in ssl_key file")
                && e.contains("does not match the client certificate"),
            "{e}"
        );
        s.key = Some(dir.file("open.key", &ckey, 0o644));
        let e = Connector::new(&s, "localhost").unwrap_err();
        assert!(e.contains("has group or world access"), "{e}");
        s.key = Some(dir.file(
            "enc.key",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
            0o600,
        ));
        let e = Connector::new(&s, "localhost").unwrap_err();
        assert!(e.contains("encrypted private key"), "{e}");
        s.key = Some(cert_only.clone());
        let _ = std::fs::set_permissions(
            &cert_only,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
        );
        let e = Connector::new(&s, "localhost").unwrap_err();
        assert!(
            e.contains("contains no private key") && !e.contains("MII"),
            "{e}"
        );

        // files that are missing or not certificates
        let e = Connector::new(
            &settings(SslMode::VerifyCa, Some("/nonexistent/ca.crt")),
            "h",
        )
        .unwrap_err();
        assert_eq!(
            e,
            "could not read ssl_rootcert file \"/nonexistent/ca.crt\": No such file or directory"
        );
        let e = Connector::new(&settings(SslMode::VerifyCa, Some(&key_only)), "h").unwrap_err();
        assert!(e.contains("contains no certificate"), "{e}");
        let e = Connector::new(&settings(SslMode::VerifyFull, None), "h").unwrap_err();
        assert!(e.contains("needs ssl_rootcert"), "{e}");
    }

    #[test]
    fn alert_names_read_like_openssl() {
        assert_eq!(
            alert_name(rustls::AlertDescription::UnknownCA),
            "unknown ca"
        );
        assert_eq!(
            alert_name(rustls::AlertDescription::CertificateRequired),
            "certificate required"
        );
    }
}
