//! TLS on the public listener (`tls_cert`/`tls_key`): a certificate per
//! site chosen by SNI (`[[sites]] tls_cert`/`tls_key`), the default one for
//! any other name, HTTP/1.1 and h2 by ALPN, and the files read again on
//! SIGHUP. A reload changes what new handshakes get; connections already
//! open keep the session they made.
//!
//! The handshake runs on the listener thread that took the connection,
//! within the header-read timeout; the decrypted stream then goes to hyper
//! (the raw relay reads plain sockets only), with every limit of the plain
//! listener.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::certificates::{load_pair, CertPlan};

/// Certificates loaded from a [`CertPlan`].
#[derive(Debug)]
struct Loaded {
    default: Arc<CertifiedKey>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

/// Chooses the certificate by SNI; reloadable.
#[derive(Debug)]
pub struct SniCertificates {
    plan: CertPlan,
    loaded: RwLock<Arc<Loaded>>,
}

impl SniCertificates {
    /// Loads every file of `plan`; an error names the file and what is wrong.
    pub fn load(plan: CertPlan) -> Result<Arc<SniCertificates>, String> {
        let loaded = load_plan(&plan)?;
        Ok(Arc::new(SniCertificates {
            plan,
            loaded: RwLock::new(Arc::new(loaded)),
        }))
    }

    /// Reads the files again (SIGHUP). On an error the certificates in use
    /// stay, and the error is returned for the log.
    pub fn reload(&self) -> Result<(), String> {
        let loaded = load_plan(&self.plan)?;
        *self.loaded.write() = Arc::new(loaded);
        Ok(())
    }

    /// The server configuration of the listener: these certificates,
    /// h2 and HTTP/1.1 by ALPN.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        crate::upstream::install_crypto_provider();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for SniCertificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let loaded = self.loaded.read().clone();
        let by_name = hello.server_name().and_then(|name| {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            loaded.by_name.get(&name).cloned()
        });
        Some(by_name.unwrap_or_else(|| loaded.default.clone()))
    }
}

fn load_plan(plan: &CertPlan) -> Result<Loaded, String> {
    let default = Arc::new(load_pair(&plan.default)?);
    let mut by_name = HashMap::new();
    for (domain, files) in &plan.sites {
        by_name.insert(domain.clone(), Arc::new(load_pair(files)?));
    }
    Ok(Loaded { default, by_name })
}
