//! Embedding shardmq in a program: start a broker with a few hooks, subscribe with an
//! MQTT client, publish from the program every 100 ms, shut down.
//!
//! ```text
//! cargo run --example embed
//! ```

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet};
use shardmq::hooks::{Fold, Origin};
use shardmq::protocol::QoS;
use shardmq::Broker;

/// Messages the program publishes.
const TICKS: usize = 30;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let through_hook = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&through_hook);
    let broker = Broker::builder()
        .listen(["127.0.0.1:0".parse()?])
        .cores(NonZeroUsize::new(2))
        .hooks(move |hooks| {
            hooks.on_client_connected(|c| {
                println!("[hook] {} connected (shard {})", c.client_id, c.shard);
            });
            hooks.on_client_disconnected(|c, reason| {
                println!("[hook] {} disconnected: {reason}", c.client_id);
            });
            // Count what enters the broker, and mark the program's own messages.
            hooks.on_message_publish(move |origin, message| {
                counter.fetch_add(1, Ordering::Relaxed);
                match (origin, message) {
                    (Origin::Api, Some(mut m)) => {
                        let mut payload = b"[api] ".to_vec();
                        payload.extend_from_slice(&m.payload);
                        m.payload = payload.into();
                        Fold::Next(Some(m))
                    }
                    (_, other) => Fold::Next(other),
                }
            });
        })
        .start()?;
    let addr = broker.local_addrs()[0];
    println!("broker listening on {addr}");

    // A client subscribed to what the program publishes, on its own thread.
    let mut options = MqttOptions::new("embed-example", addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(10));
    let (client, mut connection) = Client::new(options, 16);
    client.subscribe("ticks/#", rumqttc::QoS::AtLeastOnce)?;
    let (subscribed_tx, subscribed_rx) = std::sync::mpsc::channel();
    let disconnecting = client.clone();
    let subscriber = thread::spawn(move || {
        let mut received = 0;
        for event in connection.iter() {
            match event {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = subscribed_tx.send(());
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    received += 1;
                    println!("[client] {} {}", p.topic, String::from_utf8_lossy(&p.payload));
                    if received == TICKS {
                        let _ = disconnecting.disconnect();
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => {
                    println!("[client] connection ended: {e}");
                    break;
                }
            }
        }
        received
    });
    subscribed_rx.recv_timeout(Duration::from_secs(5))?;

    for i in 0..TICKS {
        broker.publish("ticks/example", format!("tick {i}"), QoS::AtLeastOnce, false)?;
        thread::sleep(Duration::from_millis(100));
    }

    let received = subscriber.join().map_err(|_| "subscriber thread panicked")?;
    drop(client);
    println!(
        "published {TICKS}, the client received {received}, {} message(s) went through the \
         message.publish hook",
        through_hook.load(Ordering::Relaxed)
    );
    broker.shutdown()?;
    println!("broker stopped");
    Ok(())
}
