//! `xtask soak serve` (hidden, run inside the server netns beside nginx): the raw TCP echo
//! server, the WebSocket echo server and a server-speaks-first greeter (SMTP-like: a greeting,
//! then it waits for the client) the soak's clients reach through the agent. Runs until it is
//! signalled.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context as _, Result};
use tokio::{
    io::AsyncWriteExt as _,
    net::{TcpListener, TcpStream},
};

use super::{
    config::{GREETER_PORT, TCP_ECHO_PORT, WS_PORT},
    wire,
};

/// Arguments of `xtask soak serve`.
#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (the server netns's address).
    #[arg(long)]
    pub addr: IpAddr,
}

/// Echoes every byte back.
async fn tcp_echo(mut s: TcpStream) {
    let (mut r, mut w) = s.split();
    let _ = tokio::io::copy(&mut r, &mut w).await;
}

/// Answers the upgrade with 101 and echoes every text frame until a close or an error.
async fn ws_echo(mut s: TcpStream) -> Result<()> {
    let (head, _) = wire::read_head(&mut s).await?;
    if !head.to_ascii_lowercase().contains("upgrade: websocket") {
        s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await?;
        return Ok(());
    }
    let accept = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        wire::WS_ACCEPT
    );
    s.write_all(accept.as_bytes()).await?;
    loop {
        let (op, p) = wire::ws_read(&mut s).await?;
        if op == 0x8 {
            return Ok(());
        }
        s.write_all(&wire::ws_frame(&p, None)).await?;
    }
}

/// The greeter's first words, sent on accept before the client says anything.
pub const GREETING: &[u8] = b"220 soak greeter ready\r\n";

/// Greets, then holds the connection until the client closes it (reading and dropping).
async fn greet(mut s: TcpStream) {
    if s.write_all(GREETING).await.is_ok() {
        let _ = tokio::io::copy(&mut s, &mut tokio::io::sink()).await;
    }
}

/// Which server a listener runs.
#[derive(Clone, Copy)]
enum Kind {
    TcpEcho,
    WsEcho,
    Greeter,
}

async fn serve(addr: SocketAddr, kind: Kind) -> Result<()> {
    let l = TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr}"))?;
    loop {
        let (s, _) = l.accept().await?;
        match kind {
            Kind::WsEcho => tokio::spawn(async move {
                let _ = ws_echo(s).await;
            }),
            Kind::TcpEcho => tokio::spawn(tcp_echo(s)),
            Kind::Greeter => tokio::spawn(greet(s)),
        };
    }
}

/// Entry of `xtask soak serve`.
pub fn main(a: &ServeArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        tokio::try_join!(
            serve(SocketAddr::new(a.addr, TCP_ECHO_PORT), Kind::TcpEcho),
            serve(SocketAddr::new(a.addr, WS_PORT), Kind::WsEcho),
            serve(SocketAddr::new(a.addr, GREETER_PORT), Kind::Greeter)
        )
        .map(|_| ())
    })
}
