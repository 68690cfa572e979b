// Example single-page app: the server only sends index.html ("Loading…");
// this script fetches its data from /api/*.json and builds the page, the way
// a React/Vue/Svelte bundle would. Crawlers that do not run JavaScript see
// nothing without a prerendering proxy in front.
//
// Routes: /  /about  /products  /products/<id>  /old-about (301 to /about);
// anything else renders a not-found page that tells the proxy to answer 404.
(function () {
  "use strict";

  // Stands in for framework start-up and lazy data: the page is not complete
  // at the load event, so a renderer has to wait for prerenderReady.
  var RENDER_DELAY_MS = 150;

  var app = document.getElementById("app");

  function getJSON(path) {
    return fetch(path, { headers: { Accept: "application/json" } }).then(function (res) {
      if (!res.ok) {
        var err = new Error(path + " answered " + res.status);
        err.status = res.status;
        throw err;
      }
      return res.json();
    });
  }

  function delay(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) { node.setAttribute(name, attrs[name]); });
    (children || []).forEach(function (child) {
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  // Head tags this script owns are marked so a client-side navigation can
  // replace them instead of piling up duplicates.
  function setHead(meta) {
    document.querySelectorAll("[data-managed]").forEach(function (node) { node.remove(); });
    document.title = meta.title;
    var url = location.origin + meta.path;
    var tags = [
      el("meta", { name: "description", content: meta.description }),
      el("link", { rel: "canonical", href: url }),
      el("meta", { property: "og:title", content: meta.title }),
      el("meta", { property: "og:description", content: meta.description }),
      el("meta", { property: "og:type", content: meta.ogType || "website" }),
      el("meta", { property: "og:url", content: url }),
      el("meta", { name: "twitter:card", content: "summary" })
    ];
    if (meta.status) {
      tags.push(el("meta", { name: "prerender-status-code", content: String(meta.status) }));
    }
    if (meta.location) {
      tags.push(el("meta", { name: "prerender-header", content: "Location: " + location.origin + meta.location }));
    }
    if (meta.jsonLd) {
      var script = el("script", { type: "application/ld+json" });
      script.textContent = JSON.stringify(meta.jsonLd);
      tags.push(script);
    }
    tags.forEach(function (node) {
      node.setAttribute("data-managed", "");
      document.head.appendChild(node);
    });
  }

  function layout(site, content) {
    return [
      el("header", {}, [
        el("nav", {}, [
          el("a", { href: "/" }, [site.name]),
          el("a", { href: "/products" }, ["Products"]),
          el("a", { href: "/about" }, ["About"])
        ])
      ]),
      el("main", {}, content),
      el("footer", {}, [site.name + " — " + site.tagline])
    ];
  }

  function productLink(p) {
    return el("div", { class: "product" }, [
      el("h2", {}, [el("a", { href: "/products/" + p.id }, [p.name])]),
      el("p", {}, [p.summary]),
      el("p", { class: "price" }, ["€" + p.price])
    ]);
  }

  var routes = [
    {
      match: /^\/$/,
      load: function (site) {
        return getJSON("/api/products.json").then(function (list) {
          return {
            meta: {
              title: site.name + " — " + site.tagline,
              description: site.description,
              jsonLd: { "@context": "https://schema.org", "@type": "Organization", name: site.name, url: location.origin + "/" }
            },
            content: [el("h1", {}, [site.tagline])].concat(list.products.map(productLink))
          };
        });
      }
    },
    {
      match: /^\/products\/?$/,
      load: function (site) {
        return getJSON("/api/products.json").then(function (list) {
          return {
            meta: { title: "Products — " + site.name, description: "All lamps by " + site.name + "." },
            content: [el("h1", {}, ["Products"])].concat(list.products.map(productLink))
          };
        });
      }
    },
    {
      match: /^\/products\/(\d+)\/?$/,
      load: function (site, m) {
        return getJSON("/api/product-" + m[1] + ".json").then(function (p) {
          return {
            meta: {
              title: p.name + " — " + site.name,
              description: p.description,
              ogType: "product",
              jsonLd: {
                "@context": "https://schema.org",
                "@type": "Product",
                name: p.name,
                sku: p.sku,
                description: p.description,
                offers: { "@type": "Offer", price: p.price, priceCurrency: p.currency, availability: "https://schema.org/InStock" }
              }
            },
            content: [
              el("h1", { "data-product-id": String(p.id) }, [p.name]),
              el("p", {}, [p.description]),
              el("ul", {}, p.features.map(function (f) { return el("li", {}, [f]); })),
              el("p", { class: "price" }, ["€" + p.price])
            ]
          };
        });
      }
    },
    {
      match: /^\/about\/?$/,
      load: function (site) {
        return Promise.resolve({
          meta: { title: "About — " + site.name, description: site.about[0] },
          content: [el("h1", {}, ["About " + site.name])].concat(site.about.map(function (t) { return el("p", {}, [t]); }))
        });
      }
    },
    {
      // A moved page: crawlers get a real 301 with this Location.
      match: /^\/old-about\/?$/,
      load: function (site) {
        return Promise.resolve({
          meta: { title: "Moved — " + site.name, description: "This page moved to /about.", status: 301, location: "/about" },
          content: [el("p", {}, ["This page moved to ", el("a", { href: "/about" }, ["About"]), "."])]
        });
      }
    }
  ];

  function notFound(site) {
    return {
      meta: { title: "Not found — " + site.name, description: "There is no page at this address.", status: 404 },
      content: [el("h1", {}, ["Not found"]), el("p", {}, ["There is no page at " + location.pathname + "."])]
    };
  }

  function render() {
    window.prerenderReady = false;
    var path = location.pathname;
    getJSON("/api/site.json")
      .then(function (site) {
        var route = null;
        var m = null;
        for (var i = 0; i < routes.length && !route; i++) {
          m = routes[i].match.exec(path);
          if (m) route = routes[i];
        }
        var page = route
          ? route.load(site, m).catch(function (err) {
              if (err.status === 404) return notFound(site);
              throw err;
            })
          : Promise.resolve(notFound(site));
        return Promise.all([page, delay(RENDER_DELAY_MS)]).then(function (done) {
          var result = done[0];
          result.meta.path = path;
          setHead(result.meta);
          app.replaceChildren.apply(app, layout(site, result.content));
        });
      })
      .catch(function (err) {
        // A failed data load is answered as 503, which the proxy never caches,
        // so a passing origin hiccup cannot stick in the cache as a real page.
        setHead({ title: "Temporarily unavailable", description: "", status: 503, path: path });
        app.replaceChildren(el("p", { class: "error" }, ["Could not load this page: " + err.message]));
      })
      .then(function () {
        window.prerenderReady = true;
      });
  }

  // Client-side navigation for people clicking around.
  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a[href^='/']");
    if (!link || event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    history.pushState(null, "", link.getAttribute("href"));
    render();
  });
  window.addEventListener("popstate", render);

  render();
})();
