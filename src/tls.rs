//! TLS from PEM files, for the server (`--tls-cert`, `--tls-key`, `--tls-client-ca`) and
//! for the `health` client, with aws-lc-rs as rustls' crypto provider.

use std::path::Path;

use anyhow::Context;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, Server, ServerTlsConfig};

use crate::config::TlsFiles;

/// Chooses aws-lc-rs as rustls' crypto provider for the process. Two providers are compiled
/// in (sqlx's rustls brings ring), so rustls cannot choose one itself. Safe to call any
/// number of times.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err only when a provider is already installed, which is as good.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the TLS {what} {}", path.display()))
}

/// The server's TLS configuration: its identity, and with a client CA, client certificates
/// required (tonic's default once a client CA is set). Checked here, at start, rather than
/// when serving begins.
pub fn server_config(files: &TlsFiles) -> anyhow::Result<ServerTlsConfig> {
    install_crypto_provider();
    let identity = Identity::from_pem(read(&files.cert, "certificate")?, read(&files.key, "key")?);
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &files.client_ca {
        config = config.client_ca_root(Certificate::from_pem(read(ca, "client CA")?));
    }
    Server::builder()
        .tls_config(config.clone())
        .context("the TLS certificate, key or client CA cannot be used")?;
    Ok(config)
}

/// A client's TLS configuration: the CA it trusts, the name the server's certificate must
/// carry (default: the host it connects to), and its own certificate, if the server wants
/// one.
pub fn client_config(
    ca: &Path,
    server_name: Option<&str>,
    identity: Option<(&Path, &Path)>,
) -> anyhow::Result<ClientTlsConfig> {
    install_crypto_provider();
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca, "CA")?));
    if let Some(name) = server_name {
        config = config.domain_name(name);
    }
    if let Some((cert, key)) = identity {
        config = config.identity(Identity::from_pem(
            read(cert, "certificate")?,
            read(key, "key")?,
        ));
    }
    Ok(config)
}
