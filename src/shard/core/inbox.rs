//! Batches from other shards: messages to fan out, retained messages to store,
//! retained answers, shared dispatches; route and shared-group updates and their
//! acknowledgements, retained queries, figures for shard 0.

use super::messages::{CtrlMsg, DataMsg};
use super::{Core, Now};

impl Core {
    pub fn handle_data(&mut self, now: Now, msg: DataMsg) {
        self.now = now;
        match msg {
            DataMsg::Publish(message) => self.deliver_local(&message),
            DataMsg::Retain(message) => self.store_retained(message),
            DataMsg::Retained { client_id, qos, sub_id, messages, query } => {
                self.deliver_retained(&client_id, qos, sub_id, messages);
                self.retained_answered(query);
            }
            DataMsg::Shared { filter, message, hops, exclude } => {
                self.dispatch_shared(&filter, message, hops, exclude.as_ref());
            }
            DataMsg::Forward { nodes, message } => self.forward_from_shard(nodes, message),
            DataMsg::ForwardShared { node, filter, message } => {
                self.forward_shared(node, filter, message);
            }
            DataMsg::ForwardRetain { node, message } => self.forward_retain(node, message),
        }
    }

    /// Handles a control item. Hand-offs and figures are the IO layer's: they
    /// never reach the core.
    pub fn handle_ctrl(&mut self, now: Now, msg: CtrlMsg) {
        self.now = now;
        match msg {
            CtrlMsg::Route { origin, rev, filter, present } => {
                self.apply_route(origin, rev, &filter, present);
                self.ctrl_out.push(origin, CtrlMsg::RouteAck { from: self.id, rev });
            }
            CtrlMsg::RouteAck { from, rev } => self.route_ack(from, rev),
            CtrlMsg::LogAck { from, batches } => self.log_acked(from, batches),
            CtrlMsg::LogFull { from, full } => self.note_log_full(from, full),
            CtrlMsg::RetainedQuery { origin, client_id, filter, qos, sub_id, query } => {
                // Answered even when empty: the SUBACK waits for every answer.
                let messages = self.retained.matching(&filter, now.unix_us);
                let msg = DataMsg::Retained { client_id, qos, sub_id, messages, query };
                self.data_out.push(origin, msg);
            }
            CtrlMsg::SharedRoute { origin, rev, filter, members } => {
                // One ring per origin keeps its updates in order.
                self.shared_routes.set(&filter, origin, members);
                self.note_shared(&filter);
                self.ctrl_out.push(origin, CtrlMsg::RouteAck { from: self.id, rev });
            }
            CtrlMsg::Node(msg) => self.apply_node(&msg),
            CtrlMsg::Will { client_id, will } => self.note_will(client_id, will),
            CtrlMsg::Io(_) | CtrlMsg::Stats(_) => {
                debug_assert!(false, "the IO layer keeps hand-offs and figures");
            }
        }
    }

    /// Adds an item of the IO layer (a hand-off, figures for shard 0) to the
    /// control batch for `dest`, so it travels batched with the core's own.
    pub fn push_ctrl(&mut self, dest: usize, msg: CtrlMsg) {
        debug_assert!(matches!(msg, CtrlMsg::Io(_) | CtrlMsg::Stats(_)));
        debug_assert_ne!(dest, self.id, "nothing is sent to the own shard");
        self.ctrl_out.push(dest, msg);
    }
}
