//! Queue notifications from the guest, on the VMM's event loop.

use super::ConsoleHandle;
use event_manager::{EventOps, EventSubscriber, Events};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

/// Relays each queue's notification eventfd to the console (which only enables a queue:
/// the work runs in the STREAMS service threads, so the loop never blocks on a port).
pub struct ConsoleEvents {
    /// The console.
    pub console: ConsoleHandle,
    /// One eventfd per queue, in index order (the transport's).
    pub notify: Vec<EventFd>,
}

impl EventSubscriber for ConsoleEvents {
    fn process(&self, events: Events, _ops: &mut EventOps) {
        let index = events.data();
        if let Some(fd) = self.notify.get(index as usize)
            && fd.read().is_ok()
        {
            self.console.queue_notified(index as u16);
        }
    }
    fn init(&self, ops: &mut EventOps) {
        for (i, fd) in self.notify.iter().enumerate() {
            ops.add(Events::with_data(fd, i as u32, EventSet::IN))
                .expect("a fresh epoll accepts an eventfd");
        }
    }
}
