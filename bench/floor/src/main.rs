//! `hyper-floor UPSTREAM_ADDR PORT`: an HTTP/1 proxy on 127.0.0.1:PORT in front of
//! UPSTREAM_ADDR (host:port) on one current-thread runtime. See Cargo.toml.
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(up), Some(port)) = (args.next(), args.next()) else {
        eprintln!("usage: hyper-floor UPSTREAM_ADDR PORT");
        std::process::exit(2);
    };
    let up: SocketAddr = up.parse().expect("UPSTREAM_ADDR is host:port");
    let port: u16 = port.parse().expect("PORT is a number");
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().expect("runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        loop {
            let Ok((client, _)) = listener.accept().await else { continue };
            tokio::spawn(proxy(client, up));
        }
    });
}

async fn proxy(client: TcpStream, up: SocketAddr) {
    let Ok(upstream) = TcpStream::connect(up).await else { return };
    let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
    let Ok((sender, conn)) = hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(upstream)).await else {
        return;
    };
    tokio::spawn(conn);
    // HTTP/1 serves one request of a connection at a time, so the lock is never contended.
    let sender = Arc::new(tokio::sync::Mutex::new(sender));
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let sender = sender.clone();
        async move {
            let mut sender = sender.lock().await;
            sender.ready().await?;
            sender.send_request(req).await
        }
    });
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(client), service).await;
}
