//! FIFO message groups within one receive: the jobs of a group run one after another,
//! in the order SQS handed their messages out.

use std::collections::HashMap;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use tokio::sync::oneshot;

/// A job's place in its FIFO message group: it starts once the previous job of the group
/// in the same receive has ended, and tells the next one how it ended.
#[derive(Default)]
pub(super) struct Turn {
    /// Ends with whether the previous job's message left the queue for good.
    pub(super) previous: Option<oneshot::Receiver<bool>>,
    pub(super) next: Option<oneshot::Sender<bool>>,
}

impl Turn {
    /// Waits for the previous job of the group; true when its message stays on the
    /// queue, so that this one goes back too, to keep the group in order.
    pub(super) async fn wait(previous: Option<oneshot::Receiver<bool>>) -> bool {
        match previous {
            // A dropped sender means the previous job ended without a word: go on.
            Some(previous) => !previous.await.unwrap_or(true),
            None => false,
        }
    }
}

/// Pairs each message with its turn: messages of one FIFO message group (in the order
/// SQS handed them out, which is the group's order) run one after another; others, and
/// standard-queue messages, run at once.
pub(super) fn in_group_order(messages: Vec<Message>) -> Vec<(Message, Turn)> {
    let mut last_of_group: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<(Message, Turn)> = Vec::with_capacity(messages.len());
    for message in messages {
        let group = message
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
            .cloned();
        let mut turn = Turn::default();
        if let Some(group) = group {
            if let Some(&before) = last_of_group.get(&group) {
                let (tx, rx) = oneshot::channel();
                out[before].1.next = Some(tx);
                turn.previous = Some(rx);
            }
            last_of_group.insert(group, out.len());
        }
        out.push((message, turn));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, group: Option<&str>) -> Message {
        let mut m = Message::builder().message_id(id);
        if let Some(group) = group {
            m = m.attributes(MessageSystemAttributeName::MessageGroupId, group);
        }
        m.build()
    }

    #[tokio::test]
    async fn jobs_of_one_fifo_group_are_chained_in_order_and_others_are_free() {
        let turns = in_group_order(vec![
            message("a1", Some("alice")),
            message("b1", Some("bob")),
            message("a2", Some("alice")),
            message("s", None),
            message("a3", Some("alice")),
        ]);
        let shape: Vec<(&str, bool, bool)> = turns
            .iter()
            .map(|(m, t)| {
                (
                    m.message_id().unwrap(),
                    t.previous.is_some(),
                    t.next.is_some(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                ("a1", false, true),
                ("b1", false, false),
                ("a2", true, true),
                ("s", false, false),
                ("a3", true, false),
            ]
        );
        // a1's end reaches a2, and a2's reaches a3.
        let mut turns = turns.into_iter().map(|(_, t)| t).collect::<Vec<_>>();
        let a3 = turns.pop().unwrap();
        let _s = turns.pop().unwrap();
        let a2 = turns.pop().unwrap();
        let _b1 = turns.pop().unwrap();
        let a1 = turns.pop().unwrap();
        a1.next.unwrap().send(true).unwrap();
        assert!(a2.previous.unwrap().await.unwrap());
        a2.next.unwrap().send(false).unwrap();
        assert!(!a3.previous.unwrap().await.unwrap());
    }
}
