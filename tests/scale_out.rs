//! Several instances acting as one on a shared Redis Cluster: one render per
//! key across instances, purges seen everywhere.

mod common;

use common::proxy::{send, ProxyArgs, ProxyProcess};
use common::redis_cluster::RedisCluster;
use common::spa::Spa;
use futures::future::join_all;

const HOST: &str = "www.example.test";
const TOKEN: &str = "scale-out-admin-token-0123";

fn instance(spa: &Spa, redis: &str) -> ProxyProcess {
    ProxyArgs::small_pool(&spa.url(), HOST)
        .flag("--redis", redis)
        .flag("--admin-token", TOKEN)
        .start_ready()
}

async fn bot(proxy: &ProxyProcess, path: &str) -> common::proxy::Reply {
    proxy.crawl(HOST, path).await
}

#[tokio::test]
async fn two_instances_on_a_redis_cluster_render_once_and_share_purges() {
    let spa = Spa::start().await;
    let cluster = RedisCluster::start();
    let nodes = cluster.urls().join(",");
    let a = instance(&spa, &nodes);
    let b = instance(&spa, &nodes);

    let replies =
        join_all((0..10).flat_map(|_| [bot(&a, "/clustered"), bot(&b, "/clustered")])).await;
    for r in &replies {
        assert_eq!(r.status, 200);
        assert!(
            r.text().contains("at /clustered"),
            "{:?} {}",
            r.header("x-prerender-error"),
            r.text()
        );
    }
    assert_eq!(
        spa.documents("/clustered"),
        1,
        "one render across the cluster"
    );
    assert_eq!(
        bot(&b, "/clustered").await.header("x-prerender-cache"),
        Some("HIT")
    );

    let url: String =
        url::form_urlencoded::byte_serialize(format!("https://{HOST}/clustered").as_bytes())
            .collect();
    let r = send(
        "DELETE",
        &a.admin_url(&format!("/api/v1/cache?url={url}")),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        bot(&b, "/clustered").await.header("x-prerender-cache"),
        Some("MISS")
    );
    assert_eq!(spa.documents("/clustered"), 2);
}
