package notify

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"time"

	"pushgate/internal/webhook"
)

// Webhook posts a signed JSON notification to a backend's URL (for SMS,
// e-mail, or FCM/APNs done by the backend). The body is signed with
// webhook.Sign: a receiver checks it with webhook.Verify.
type Webhook struct {
	Secret []byte // never logged
	Client *http.Client
	Now    func() time.Time
	// Hosts limits the hosts posted to (Egress.WebhookHosts; empty: any),
	// for targets registered before the list changed.
	Hosts Egress
}

// Send posts body to url. A 2xx answer is sent, 404/410 gone, 429/5xx
// retried, any other answer refused.
func (w *Webhook) Send(ctx context.Context, url string, body []byte) Outcome {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return Outcome{Result: ResultRefused, Detail: "url: " + err.Error()}
	}
	if !w.Hosts.WebhookHostAllowed(req.URL.Hostname()) {
		return Outcome{Result: ResultRefused, Detail: fmt.Sprintf("url: host %q is not in --notify-webhook-hosts", req.URL.Hostname())}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "pushgate-webhook")
	req.Header.Set(webhook.Header, webhook.Sign(w.Secret, w.Now(), body))
	return httpOutcome(w.Client.Do(req))
}
