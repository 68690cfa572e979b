//! Web components nobody here wrote, rendered from their npm packages
//! (tests/fixtures/components, installed by `.ci/install-deps`): RapiDoc
//! documenting a local OpenAPI file (its operations live in shadow roots)
//! and Lit components loaded through an import map. What they show must be
//! in the snapshot while their scripts are not.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::origin::{Route, TestOrigin};
use prerender_proxy::render::{BrowserPool, RenderJob, RenderedPage, ShadowDom};

const PUBLIC: &str = "https://docs.example.test";

const OPENAPI: &str = r#"{
  "openapi": "3.0.3",
  "info": { "title": "Petstore fixture API", "version": "1.0.0", "description": "Pets for the render tests." },
  "paths": {
    "/pets": {
      "get": { "summary": "List all pets", "operationId": "listPets",
        "responses": { "200": { "description": "A page of pets" } } },
      "post": { "summary": "Create a pet", "operationId": "createPet",
        "responses": { "201": { "description": "Pet created" } } }
    },
    "/pets/{petId}": {
      "get": { "summary": "Info for a specific pet", "operationId": "showPetById",
        "parameters": [ { "name": "petId", "in": "path", "required": true, "schema": { "type": "string" } } ],
        "responses": { "200": { "description": "The pet" } } }
    }
  }
}"#;

const RAPIDOC_PAGE: &str = r#"<!DOCTYPE html><html><head><meta charset="utf-8"><title>API reference</title>
<script type="module" src="/node_modules/rapidoc/dist/rapidoc-min.js"></script></head>
<body><rapi-doc spec-url="/openapi.json" render-style="read" show-header="false" allow-try="false"></rapi-doc>
</body></html>"#;

const LIT_PAGE: &str = r#"<!DOCTYPE html><html><head><meta charset="utf-8"><title>Lit</title>
<script type="importmap">{ "imports": {
  "lit": "/node_modules/lit/index.js",
  "lit/": "/node_modules/lit/",
  "lit-html": "/node_modules/lit-html/lit-html.js",
  "lit-html/": "/node_modules/lit-html/",
  "lit-element/": "/node_modules/lit-element/",
  "@lit/reactive-element": "/node_modules/@lit/reactive-element/reactive-element.js",
  "@lit/reactive-element/": "/node_modules/@lit/reactive-element/"
} }</script>
<script type="module" src="/components.js"></script></head>
<body><shop-greeting name="Crawler"><span class="light">Light DOM offer</span></shop-greeting></body></html>"#;

const LIT_COMPONENTS: &str = r#"import { LitElement, html, css } from 'lit';
class ShopBadge extends LitElement {
  static properties = { label: {} };
  static styles = css`b { color: rgb(7, 8, 9); }`;
  render() { return html`<b>${this.label}</b>`; }
}
customElements.define('shop-badge', ShopBadge);
class ShopGreeting extends LitElement {
  static properties = { name: {}, items: { state: true } };
  static styles = css`h2 { font-size: 21px; }`;
  constructor() { super(); this.items = []; }
  connectedCallback() {
    super.connectedCallback();
    fetch('/api/items.json').then((r) => r.json()).then((d) => { this.items = d.items; });
  }
  render() {
    return html`<h2>Hello, ${this.name}!</h2><shop-badge label="Lit badge text"></shop-badge>
      <ul>${this.items.map((i) => html`<li>${i}</li>`)}</ul><slot></slot>`;
  }
}
customElements.define('shop-greeting', ShopGreeting);
"#;

fn components_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/components");
    assert!(
        dir.join("node_modules/lit/index.js").is_file()
            && dir
                .join("node_modules/rapidoc/dist/rapidoc-min.js")
                .is_file(),
        "the npm packages of {} are missing: run .ci/install-deps",
        dir.display()
    );
    dir
}

struct Site {
    pool: Arc<BrowserPool>,
    origin: TestOrigin,
}

impl Site {
    async fn start() -> Self {
        let origin = TestOrigin::start_with_files(
            vec![
                ("/reference", Route::html(RAPIDOC_PAGE)),
                ("/openapi.json", Route::json(OPENAPI)),
                ("/lit", Route::html(LIT_PAGE)),
                ("/components.js", Route::js(LIT_COMPONENTS)),
                (
                    "/api/items.json",
                    Route::json(r#"{"items":["Kettle from the API","Teapot from the API"]}"#),
                ),
            ],
            Some(components_dir()),
        )
        .await;
        let pool = BrowserPool::launch(common::small_pool_config())
            .await
            .expect("pool launches");
        Self { pool, origin }
    }

    async fn render(&self, path: &str, shadow_dom: ShadowDom) -> RenderedPage {
        let mut job = RenderJob::new(
            url::Url::parse(&format!("{PUBLIC}{path}")).unwrap(),
            self.origin.url(),
        );
        job.shadow_dom = shadow_dom;
        self.pool
            .render(job)
            .await
            .unwrap_or_else(|e| panic!("render of {path} failed: {e}"))
    }
}

/// The text a reader sees: tags dropped, entities of the fixtures' texts
/// left as they are (none).
fn text_of(html: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapidoc_operations_are_in_the_snapshot() {
    let site = Site::start().await;
    for mode in [ShadowDom::Declarative, ShadowDom::Flatten] {
        let page = site.render("/reference", mode).await;
        let html = &page.html;
        assert_eq!(page.status, 200);
        assert!(!html.contains("<script"), "{mode:?}: {html}");
        let text = text_of(html);
        for visible in [
            "Petstore fixture API",
            "List all pets",
            "Create a pet",
            "Info for a specific pet",
            "/pets/{petId}",
        ] {
            assert!(text.contains(visible), "{mode:?}: {visible} in {text}");
        }
        match mode {
            ShadowDom::Declarative => {
                assert!(
                    html.contains(r#"<template shadowrootmode="open">"#),
                    "{html}"
                )
            }
            ShadowDom::Flatten => assert!(!html.contains("<template shadowrootmode"), "{html}"),
        }
    }
    assert_eq!(site.origin.hits("/openapi.json"), 2);
    site.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lit_components_loaded_through_an_import_map_are_in_the_snapshot() {
    let site = Site::start().await;
    let page = site.render("/lit", ShadowDom::Declarative).await;
    let html = &page.html;
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains("importmap"), "{html}");
    let text = text_of(html);
    for visible in [
        "Hello, Crawler!",
        "Lit badge text",
        "Kettle from the API",
        "Teapot from the API",
        "Light DOM offer",
    ] {
        assert!(text.contains(visible), "{visible} in {text}");
    }
    assert_eq!(text.matches("Light DOM offer").count(), 1, "{text}");
    // Lit styles its roots with adopted constructed sheets.
    assert!(html.contains("h2 { font-size: 21px; }"), "{html}");
    assert!(html.contains("b { color: rgb(7, 8, 9); }"), "{html}");

    let flat = site.render("/lit", ShadowDom::Flatten).await.html;
    let text = text_of(&flat);
    assert!(!flat.contains("<template shadowrootmode"), "{flat}");
    assert!(
        text.contains("Hello, Crawler! Lit badge text Kettle from the API Teapot from the API Light DOM offer"),
        "the composed tree in reading order: {text}"
    );
    site.pool.shutdown().await;
}
