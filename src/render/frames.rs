//! Frames on demand: a tab's page is hidden until it uses something that
//! needs animation frames, then visible (focus emulation) until the render
//! ends.
//!
//! A visible page is styled, laid out, painted and rastered whenever it
//! changes; a hidden one never unless a script asks for layout. For the
//! shop fixture, which needs no frame, that was ≈ 40 ms of CPU and +37 ms
//! per miss (bench/HISTORY.md). A page that does — through
//! `requestAnimationFrame`, an IntersectionObserver or ResizeObserver, Web
//! Animations, scroll, animation or transition events, or by reading its
//! visibility — calls a binding from the script added before any of its
//! own ([`BINDING`], see `page::PAGE_HOOKS_JS`), and the tab's event task
//! turns focus emulation on: its callbacks then run as in a visible,
//! focused tab, as they must however many tabs render at once (SPEC §3).
//!
//! A frozen page cannot be visible and a visible page cannot be frozen, so
//! the state changes are serialised here: `freeze` (before the page is
//! frozen) turns frames off and refuses them until `thaw` (the next
//! document committed) sets the tab active again; a call that arrives while
//! the page is frozen is kept for the next document.

use chromiumoxide::cdp::browser_protocol::emulation::SetFocusEmulationEnabledParams;
use chromiumoxide::cdp::browser_protocol::page::{
    SetWebLifecycleStateParams, SetWebLifecycleStateState,
};
use std::sync::atomic::{AtomicBool, Ordering};

use chromiumoxide::Page;

use super::intercept::CDP_CALL_TIMEOUT;
use super::RenderError;

/// Name of the binding a page calls when it needs frames. The page hooks
/// take it off the window before any page script runs.
pub(crate) const BINDING: &str = "__prerenderProxyNeedsFrames";

#[derive(Default)]
struct State {
    /// The tab holds the frozen page of a finished render.
    frozen: bool,
    /// Frames were asked for since the last freeze.
    wanted: bool,
    /// Focus emulation is on.
    on: bool,
}

/// A tab's frame state (see the module documentation).
#[derive(Default)]
pub(crate) struct Frames {
    state: tokio::sync::Mutex<State>,
    /// `State::frozen`, readable without waiting: the event task looks at it
    /// when a document commits, so a commit from before the freeze does not
    /// thaw the page being frozen.
    frozen: AtomicBool,
}

async fn set_focus(page: &Page, on: bool) -> Result<(), RenderError> {
    match tokio::time::timeout(
        CDP_CALL_TIMEOUT,
        page.execute(SetFocusEmulationEnabledParams::new(on)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(RenderError::Protocol(format!(
            "Emulation.setFocusEmulationEnabled: {e}"
        ))),
        Err(_) => Err(RenderError::Protocol(
            "Emulation.setFocusEmulationEnabled: timed out".into(),
        )),
    }
}

impl Frames {
    /// The page (or the renderer, before a tall layout) needs frames.
    pub(crate) async fn want(&self, page: &Page) -> Result<(), RenderError> {
        let mut st = self.state.lock().await;
        st.wanted = true;
        if st.frozen || st.on {
            return Ok(());
        }
        set_focus(page, true).await?;
        st.on = true;
        Ok(())
    }

    /// Before the finished page is frozen: frames off until [`Self::thaw`].
    pub(crate) async fn freeze(&self, page: &Page) -> Result<(), RenderError> {
        let mut st = self.state.lock().await;
        st.frozen = true;
        self.frozen.store(true, Ordering::SeqCst);
        st.wanted = false;
        if st.on {
            set_focus(page, false).await?;
            st.on = false;
        }
        Ok(())
    }

    /// Whether the tab holds a frozen page.
    pub(crate) fn is_frozen(&self) -> bool {
        self.frozen.load(Ordering::SeqCst)
    }

    /// A document replaced the frozen page: active again, with frames if
    /// they were asked for meanwhile. Does nothing unless frozen.
    pub(crate) async fn thaw(&self, page: &Page) {
        let mut st = self.state.lock().await;
        if !st.frozen {
            return;
        }
        st.frozen = false;
        self.frozen.store(false, Ordering::SeqCst);
        let active = SetWebLifecycleStateParams::new(SetWebLifecycleStateState::Active);
        let _ = tokio::time::timeout(CDP_CALL_TIMEOUT, page.execute(active)).await;
        if st.wanted && set_focus(page, true).await.is_ok() {
            st.on = true;
        }
    }
}
