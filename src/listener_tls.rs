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
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A certificate chain and its key, as files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The certificates to serve: the default and one per site domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPlan {
    pub default: CertFiles,
    /// Lowercase domain → its files.
    pub sites: Vec<(String, CertFiles)>,
}

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

/// One certificate chain and its private key, checked to belong together.
pub fn load_pair(files: &CertFiles) -> Result<CertifiedKey, String> {
    let chain = read_chain(&files.cert)?;
    let key = read_key(&files.key)?;
    crate::upstream::install_crypto_provider();
    let provider = rustls::crypto::CryptoProvider::get_default()
        .ok_or("no TLS crypto provider")?
        .clone();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        format!(
            "{} and {} do not make a certificate and its key: {e}",
            files.cert.display(),
            files.key.display()
        )
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not a PEM certificate chain: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("{} holds no PEM private key: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> CertFiles {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let files = CertFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.cert.pem()).unwrap();
        std::fs::write(&files.key, cert.signing_key.serialize_pem()).unwrap();
        files
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let a = pair(dir.path(), "a.test");
        let b = pair(dir.path(), "b.test");
        assert!(load_pair(&a).is_ok());
        let mixed = CertFiles {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let e = load_pair(&mixed).unwrap_err();
        assert!(e.contains("a.test.pem"), "{e}");
        let missing = CertFiles {
            cert: dir.path().join("none.pem"),
            key: a.key,
        };
        assert!(load_pair(&missing).unwrap_err().contains("cannot read"));
        std::fs::write(dir.path().join("empty.pem"), "x").unwrap();
        let empty = CertFiles {
            cert: dir.path().join("empty.pem"),
            key: b.key,
        };
        assert!(load_pair(&empty)
            .unwrap_err()
            .contains("no PEM certificate"));
    }
}
