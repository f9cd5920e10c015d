// pushgate-sw.js: the service worker that shows pushgate's Web Push
// notifications (docs/offline-push.md). Register it at the site's root:
//
//   navigator.serviceWorker.register('/pushgate-sw.js')
//
// A push carries the JSON pushgate sends: {title, body, url, icon, tag,
// message_id, user_id}. The worker shows it as a system notification and
// tells every open page of the site ({type: "pushgate.push", push}); a
// click focuses a page already showing the notification's url, or opens it.
'use strict';

function parsePush(event) {
  if (!event.data) return null;
  try {
    const p = event.data.json();
    return p && typeof p.title === 'string' ? p : null;
  } catch (_) {
    return null;
  }
}

async function tellPages(msg) {
  const pages = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  for (const c of pages) c.postMessage(msg);
  return pages.length;
}

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('push', (event) => {
  const p = parsePush(event);
  if (!p) return;
  const options = {
    body: p.body || '',
    data: { url: p.url || '/', message_id: p.message_id || '', user_id: p.user_id || '' },
  };
  if (p.icon) options.icon = p.icon;
  if (p.tag) options.tag = p.tag;
  event.waitUntil(Promise.all([
    self.registration.showNotification(p.title, options),
    tellPages({ type: 'pushgate.push', push: p }),
  ]));
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const url = new URL((event.notification.data && event.notification.data.url) || '/', self.location.origin).href;
  event.waitUntil((async () => {
    const pages = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
    for (const c of pages) {
      if (c.url === url && 'focus' in c) {
        c.postMessage({ type: 'pushgate.click', data: event.notification.data });
        return c.focus();
      }
    }
    return self.clients.openWindow(url);
  })());
});
