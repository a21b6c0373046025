//! MongoDB test helpers: one client to the shared FerretDB, driven from synchronous tests.

use std::sync::OnceLock;

pub use super::ports::MONGO_PORT;
use super::servers::ensure_server;

pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap())
}

pub fn block<F: std::future::IntoFuture>(f: F) -> F::Output {
    runtime().block_on(f.into_future())
}

pub fn mongo() -> &'static mongodb::Client {
    static CLIENT: OnceLock<mongodb::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        ensure_server("postgres");
        ensure_server("ferretdb");
        block(mongodb::Client::with_uri_str(format!("mongodb://127.0.0.1:{MONGO_PORT}/"))).unwrap()
    })
}
