//! The end of a render: the DOM serialised in one task of the page
//! ([`SNAPSHOT_JS`]), the status and header metas applied, and a page that
//! moved itself to another path of its site answered as a redirect.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::Tab;
use crate::render::intercept::RenderCtx;
use crate::render::{RenderError, RenderedPage, ShadowDom};

/// Largest serialised page accepted.
const MAX_HTML_BYTES: usize = 16 * 1024 * 1024;
/// Most `<meta name="prerender-header">` headers taken from one page.
const MAX_META_HEADERS: usize = 16;

/// Reads the status/header metas and serialises the document with its
/// doctype, after, in the document and in every shadow root: writing styles
/// that live only in the CSSOM (rules added with `insertRule`, adopted
/// constructed sheets) as `<style>` text; removing scripts (except JSON-LD)
/// and, with them, `<noscript>` when asked; declaring UTF-8. Shadow roots —
/// open ones and the closed ones [`PAGE_HOOKS_JS`] remembered — are written
/// as declarative shadow DOM (`getHTML`), or, flattened, the composed tree
/// goes into the light DOM with slots replaced by what they show (styles of
/// shadow trees are left out there: in the light DOM they would apply to
/// the whole page). Everything runs in one task: no page script or
/// observer runs between the changes and the serialisation.
const SNAPSHOT_JS: &str = r#"((opts) => {
  const metas = (name) => Array.from(document.querySelectorAll('meta[name="' + name + '"]'))
    .map((m) => m.getAttribute('content') || '');
  const status = metas('prerender-status-code');
  const headers = metas('prerender-header');
  const href = location.href;
  const hooks = window[Symbol.for('prerender-proxy')];
  const shadowRootOf = (el) => el.shadowRoot || (hooks ? hooks.closedShadowRoot(el) : null);
  const roots = [];
  const collect = (scope) => {
    for (const el of scope.querySelectorAll('*')) {
      const root = shadowRootOf(el);
      if (root) { roots.push(root); collect(root); }
    }
  };
  collect(document);
  const scopes = [document].concat(roots);
  const rulesOf = (sheet) => {
    try { return Array.from(sheet.cssRules, (r) => r.cssText).join('\n'); } catch (e) { return null; }
  };
  // A rule's text may hold "</style" (in a string): it must not end the element.
  const styleText = (css) => css.replace(/<\/(style)/gi, '<\\/$1');
  for (const scope of scopes) {
    for (const style of scope.querySelectorAll('style')) {
      const live = style.sheet ? rulesOf(style.sheet) : null;
      if (live === null) continue;
      let parsed = null;
      try {
        const fresh = new CSSStyleSheet();
        fresh.replaceSync(style.textContent);
        parsed = rulesOf(fresh);
      } catch (e) {}
      if (live !== parsed) style.textContent = styleText(live);
    }
    const adopted = (scope.adoptedStyleSheets || []).map(rulesOf).filter((t) => t);
    if (adopted.length) {
      const style = document.createElement('style');
      style.textContent = styleText(adopted.join('\n'));
      if (scope === document) (document.head || document.documentElement).appendChild(style);
      else scope.appendChild(style);
    }
    if (opts.strip) {
      for (const s of scope.querySelectorAll('script')) {
        const type = (s.getAttribute('type') || '').trim().toLowerCase();
        if (type !== 'application/ld+json') s.remove();
      }
      if (!opts.keepNoscript) for (const n of scope.querySelectorAll('noscript')) n.remove();
    }
  }
  let declared = false;
  for (const m of document.querySelectorAll('meta[charset]')) {
    m.setAttribute('charset', 'utf-8');
    declared = true;
  }
  for (const m of document.querySelectorAll('meta[http-equiv]')) {
    if (m.getAttribute('http-equiv').trim().toLowerCase() === 'content-type') {
      m.setAttribute('content', 'text/html; charset=utf-8');
      declared = true;
    }
  }
  if (!declared && document.head) {
    const m = document.createElement('meta');
    m.setAttribute('charset', 'utf-8');
    document.head.prepend(m);
  }
  const flatten = (root) => {
    const inert = document.implementation.createHTMLDocument('');
    const copy = (node, parent) => {
      if (node.nodeType !== Node.ELEMENT_NODE) {
        parent.appendChild(inert.importNode(node, false));
        return;
      }
      const name = node.localName;
      const inShadow = node.getRootNode() !== document;
      if (name === 'slot' && inShadow) {
        const assigned = node.assignedNodes();
        for (const c of (assigned.length ? assigned : Array.from(node.childNodes))) copy(c, parent);
        return;
      }
      if (inShadow && (name === 'style' || (name === 'link' && /\bstylesheet\b/i.test(node.rel)))) return;
      if (name === 'template') {
        parent.appendChild(inert.importNode(node, true));
        return;
      }
      const el = inert.importNode(node, false);
      const root = shadowRootOf(node);
      for (const c of Array.from((root || node).childNodes)) copy(c, el);
      parent.appendChild(el);
    };
    const holder = inert.createDocumentFragment();
    copy(root, holder);
    return holder.firstChild.outerHTML;
  };
  const serialize = (root) => {
    if (!roots.length || typeof root.getHTML !== 'function') return root.outerHTML;
    if (opts.flatten) {
      try { return flatten(root); } catch (e) { /* too deep a tree: declarative instead */ }
    }
    const shell = root.cloneNode(false).outerHTML;
    const end = '</' + root.localName + '>';
    if (!shell.endsWith(end)) return root.outerHTML;
    return shell.slice(0, shell.length - end.length)
      + root.getHTML({ serializableShadowRoots: true, shadowRoots: roots }) + end;
  };
  const d = document.doctype;
  let doctype = '<!DOCTYPE html>';
  if (d) {
    doctype = '<!DOCTYPE ' + d.name
      + (d.publicId ? ' PUBLIC "' + d.publicId + '"' : '')
      + (d.systemId ? (d.publicId ? '' : ' SYSTEM') + ' "' + d.systemId + '"' : '')
      + '>';
  }
  const root = document.documentElement;
  return { status, headers, href, html: doctype + '\n' + (root ? serialize(root) : '') };
})"#;

impl Tab {
    /// Snapshots the page of `ctx`, whose document answered `status`;
    /// `on_ready_timeout` says whether the wait for readiness ran out.
    pub(super) async fn snapshot(
        &self,
        ctx: &RenderCtx,
        status: u16,
        started: Instant,
        on_ready_timeout: bool,
    ) -> Result<RenderedPage, RenderError> {
        self.check_crash(ctx)?;
        let options = serde_json::json!({
            "strip": ctx.job.strip_scripts,
            "keepNoscript": ctx.job.keep_noscript,
            "flatten": ctx.job.shadow_dom == ShadowDom::Flatten,
        });
        let expression = format!("{SNAPSHOT_JS}({options})");
        let snapshot = self.evaluate(&expression).await?;
        if ctx.job.client_redirect_status != 0 {
            let href = snapshot.get("href").and_then(|h| h.as_str());
            if let Some(target) = client_redirect(
                &ctx.job.public_url,
                ctx.client_navigation().as_deref(),
                href,
            ) {
                tracing::info!(url = %ctx.job.public_url, to = %target, "page moved itself: answered as a redirect");
                self.shared.client_redirects.fetch_add(1, Ordering::Relaxed);
                return Ok(RenderedPage {
                    status: ctx.job.client_redirect_status,
                    headers: vec![("Location".to_string(), target.to_string())],
                    html: redirect_body(&target),
                    elapsed: started.elapsed(),
                    snapshot_on_ready_timeout: false,
                });
            }
        }
        let html = snapshot
            .get("html")
            .and_then(|h| h.as_str())
            .ok_or_else(|| RenderError::Protocol("snapshot returned no html".into()))?;
        if html.len() > MAX_HTML_BYTES {
            return Err(RenderError::TooLarge(html.len()));
        }
        let (status, headers) = apply_metas(status, &snapshot);
        Ok(RenderedPage {
            status,
            headers,
            html: html.to_string(),
            elapsed: started.elapsed(),
            snapshot_on_ready_timeout: on_ready_timeout,
        })
    }
}

/// Where a page moved itself during its render, if that is another path of
/// its site: the URL it tried to navigate to (`location.href`,
/// `location.replace`, a meta refresh; the navigation itself was refused),
/// else the URL it shows (`history.pushState`/`replaceState`). A move to
/// another site, or within the same path (query, fragment), is none.
pub(super) fn client_redirect(
    public: &url::Url,
    navigated: Option<&str>,
    shown: Option<&str>,
) -> Option<url::Url> {
    let decoded = |path: &str| percent_encoding::percent_decode_str(path).collect::<Vec<u8>>();
    [navigated, shown].into_iter().flatten().find_map(|raw| {
        let mut url = url::Url::parse(raw).ok()?;
        if !crate::render::policy::same_origin(&url, public)
            || decoded(url.path()) == decoded(public.path())
        {
            return None;
        }
        url.set_fragment(None);
        Some(url)
    })
}

/// The body stored with a client-side redirect: a link to its target.
fn redirect_body(target: &url::Url) -> String {
    let href = html_escape::encode_double_quoted_attribute(target.as_str());
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Moved</title></head>\
         <body><a href=\"{href}\">{href}</a></body></html>\n"
    )
}

/// Applies `<meta name="prerender-status-code">` (last valid one wins) and
/// `<meta name="prerender-header" content="Name: value">`.
fn apply_metas(status: u16, snapshot: &serde_json::Value) -> (u16, Vec<(String, String)>) {
    let strings = |key: &str| -> Vec<String> {
        snapshot
            .get(key)
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let status = strings("status")
        .iter()
        .filter_map(|s| s.trim().parse::<u16>().ok())
        .rfind(|s| (100..=599).contains(s))
        .unwrap_or(status);
    let headers = strings("headers")
        .iter()
        .filter_map(|h| parse_meta_header(h))
        .take(MAX_META_HEADERS)
        .collect();
    (status, headers)
}

fn parse_meta_header(raw: &str) -> Option<(String, String)> {
    let (name, value) = raw.split_once(':')?;
    let name = http::HeaderName::from_bytes(name.trim().as_bytes()).ok()?;
    let value = value.trim();
    http::HeaderValue::from_str(value).ok()?;
    Some((canonical_header_name(name.as_str()), value.to_string()))
}

fn canonical_header_name(lower: &str) -> String {
    lower
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_redirects_are_moves_to_another_path_of_the_site() {
        let public = url::Url::parse("https://www.example.test/old?x=1").unwrap();
        let moved = |navigated: Option<&str>, shown: Option<&str>| {
            client_redirect(&public, navigated, shown).map(|u| u.to_string())
        };
        assert_eq!(moved(None, Some("https://www.example.test/old?x=1")), None);
        assert_eq!(
            moved(None, Some("https://www.example.test/old?x=2#top")),
            None
        );
        assert_eq!(moved(None, Some("https://www.example.test/%6Fld")), None);
        assert_eq!(
            moved(None, Some("https://www.example.test/new?y=2#top")).as_deref(),
            Some("https://www.example.test/new?y=2")
        );
        assert_eq!(
            moved(
                Some("https://www.example.test/login"),
                Some("https://www.example.test/new")
            )
            .as_deref(),
            Some("https://www.example.test/login"),
            "the navigation the page started wins"
        );
        assert_eq!(
            moved(
                Some("https://www.example.test/old"),
                Some("https://www.example.test/new")
            )
            .as_deref(),
            Some("https://www.example.test/new")
        );
        assert_eq!(moved(Some("https://accounts.other.test/login"), None), None);
        assert_eq!(moved(None, Some("http://www.example.test/new")), None);
        assert_eq!(moved(Some("not a url"), Some("about:blank")), None);
        let body = redirect_body(&url::Url::parse("https://www.example.test/a?b=1&c=\"2").unwrap());
        assert!(
            body.contains(r#"href="https://www.example.test/a?b=1&amp;c=%222""#),
            "{body}"
        );
    }

    #[test]
    fn metas_override_status_and_add_headers() {
        let snap = serde_json::json!({
            "status": ["200", "301"],
            "headers": ["Location: https://www.example.test/new", "bad header", "X-Evil: a\r\nb", "x-robots-tag: noindex"],
            "html": ""
        });
        let (status, headers) = apply_metas(200, &snap);
        assert_eq!(status, 301);
        assert_eq!(
            headers,
            vec![
                (
                    "Location".to_string(),
                    "https://www.example.test/new".to_string()
                ),
                ("X-Robots-Tag".to_string(), "noindex".to_string())
            ]
        );
        let (status, _) = apply_metas(404, &serde_json::json!({"status": ["abc", "9999"]}));
        assert_eq!(status, 404);
    }
}
