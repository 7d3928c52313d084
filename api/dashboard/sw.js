// Downloads an archive with the page's API key (download() in app.js): a link cannot send the Authorization header,
// and the page must not hold a many-GB archive in memory. The page hands over the key for one ticket, then opens
// download/<ticket>; the response of the API goes straight into the browser's downloads, as a stream.
"use strict";

const tickets = new Map();  // ticket -> {url, key}; each is used once

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("message", (event) => {
  const { ticket, url, key } = event.data;
  tickets.set(ticket, { url, key });
  event.ports[0].postMessage("ready");
});

self.addEventListener("fetch", (event) => {
  const match = new URL(event.request.url).pathname.match(/\/download\/([0-9a-f-]{36})$/);
  if (!match) return;  // every other request goes to the network as usual
  const ticket = tickets.get(match[1]);
  tickets.delete(match[1]);
  event.respondWith(ticket ?
    // redirect "manual": a redirect to the S3 store (DOWNLOAD_REDIRECT_SECONDS) is followed by the browser itself
    fetch(ticket.url, { headers: { Authorization: `Bearer ${ticket.key}` }, redirect: "manual" }) :
    new Response("This download link was used already: start the download again from the job page.",
                 { status: 410, headers: { "Content-Type": "text/plain" } }));
});
