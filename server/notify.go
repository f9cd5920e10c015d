package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"pushgate/gateway"
	pb "pushgate/gen/pushgate/v1"
	"pushgate/internal/notify"
)

// Notifier is what the service needs for offline notification
// (internal/notify's Escalator implements it).
type Notifier interface {
	AddTarget(ctx context.Context, userID string, t notify.Target) (string, error)
	RemoveTarget(ctx context.Context, userID, id string) (bool, error)
	Targets(ctx context.Context, userID string) ([]notify.Target, error)
	Escalate(ctx context.Context, sent gateway.Sent, spec notify.Spec)
	MaxTargets() int
}

// DefaultNotifyDeadline is how long a notification of a message sent
// without a ttl may be retried (and a push service may hold it).
const DefaultNotifyDeadline = 5 * time.Minute

const maxTargetIDBytes = 64

var errNoNotifier = status.Error(codes.FailedPrecondition, "offline notification is not set up on this server")

// escalation validates a message's notification and escalation.
func (l *Limits) escalation(field string, m *pb.Message, storable bool) error {
	n, e := m.GetNotification(), m.GetEscalation()
	if n == nil && e == nil {
		return nil
	}
	switch {
	case !storable && n != nil:
		return invalid(field+".notification", "Broadcast and Publish cannot escalate; use SendToUser or SendToUsers")
	case !storable:
		return invalid(field+".escalation", "Broadcast and Publish cannot escalate; use SendToUser or SendToUsers")
	case n == nil:
		return invalid(field+".notification", "is required with escalation")
	case e == nil:
		return invalid(field+".escalation", "is required with notification")
	}
	if err := toNotification(n).Validate(); err != nil {
		f, desc, _ := strings.Cut(err.Error(), ": ")
		if f == "notification" {
			return invalid(field+".notification", desc)
		}
		return invalid(field+".notification."+f, desc)
	}
	if a := e.GetAfter(); a != nil {
		if err := a.CheckValid(); err != nil {
			return invalid(field+".escalation.after", err.Error())
		}
		switch d := a.AsDuration(); {
		case d < 0:
			return invalid(field+".escalation.after", "must not be negative")
		case d > 0 && m.GetTtl().AsDuration() < d+time.Second:
			return invalid(field+".escalation.after", "needs the message kept until then: set ttl at least a second longer than after")
		}
	}
	seen := map[string]bool{}
	for i, c := range e.GetChannels() {
		switch {
		case c != notify.ChannelWebPush && c != notify.ChannelWeChat && c != notify.ChannelWebhook:
			return invalid(fmt.Sprintf("%s.escalation.channels[%d]", field, i), fmt.Sprintf("%q is not one of webpush, wechat, webhook", c))
		case seen[c]:
			return invalid(fmt.Sprintf("%s.escalation.channels[%d]", field, i), fmt.Sprintf("%q given twice", c))
		}
		seen[c] = true
	}
	return nil
}

func toNotification(n *pb.Notification) notify.Notification {
	return notify.Notification{Title: n.GetTitle(), Body: n.GetBody(), URL: n.GetUrl(), Icon: n.GetIcon(), Tag: n.GetTag(),
		Urgency: n.GetUrgency(), WeChatTemplateID: n.GetWechatTemplateId(), WeChatPage: n.GetWechatPage(), WeChatData: n.GetWechatData()}
}

// toTarget converts and validates a PushTarget; errors are INVALID_ARGUMENT
// naming the field under "target".
func toTarget(p *pb.PushTarget) (notify.Target, error) {
	var t notify.Target
	var field string
	switch x := p.GetTarget().(type) {
	case *pb.PushTarget_Webpush:
		sub := &notify.Subscription{Endpoint: x.Webpush.GetEndpoint()}
		sub.Keys.P256dh, sub.Keys.Auth = x.Webpush.GetP256Dh(), x.Webpush.GetAuth()
		t = notify.Target{Channel: notify.ChannelWebPush, WebPush: sub}
	case *pb.PushTarget_WechatOpenid:
		t, field = notify.Target{Channel: notify.ChannelWeChat, OpenID: x.WechatOpenid}, "wechat_openid"
	case *pb.PushTarget_WebhookUrl:
		t, field = notify.Target{Channel: notify.ChannelWebhook, URL: x.WebhookUrl}, "webhook_url"
	default:
		return t, invalid("target", "one of webpush, wechat_openid or webhook_url is required")
	}
	if err := t.Validate(); err != nil {
		f, desc, _ := strings.Cut(err.Error(), ": ")
		f = strings.ReplaceAll(f, "keys.", "") // webpush.keys.auth is webpush.auth in the proto
		if field != "" {
			f = field
		}
		return t, invalid("target."+f, desc)
	}
	return t, nil
}

func fromTarget(t notify.Target) *pb.PushTarget {
	out := &pb.PushTarget{Id: t.ID()}
	switch t.Channel {
	case notify.ChannelWebPush:
		out.Target = &pb.PushTarget_Webpush{Webpush: &pb.WebPushSubscription{Endpoint: t.WebPush.Endpoint, P256Dh: t.WebPush.Keys.P256dh, Auth: t.WebPush.Keys.Auth}}
	case notify.ChannelWeChat:
		out.Target = &pb.PushTarget_WechatOpenid{WechatOpenid: t.OpenID}
	case notify.ChannelWebhook:
		out.Target = &pb.PushTarget_WebhookUrl{WebhookUrl: t.URL}
	}
	return out
}

// canEscalate refuses a message with a notification when nothing can
// escalate it, before it is sent.
func (s *Service) canEscalate(m *pb.Message) error {
	if m.GetNotification() != nil && s.notifier == nil {
		return errNoNotifier
	}
	return nil
}

// escalate hands a sent message's escalation to the notifier; a repeat
// of an idempotent call escalates nothing (the first call did).
func (s *Service) escalate(ctx context.Context, m *pb.Message, sent gateway.Sent) {
	n := m.GetNotification()
	if n == nil || sent.Replayed {
		return
	}
	deadline := DefaultNotifyDeadline
	if ttl := m.GetTtl().AsDuration(); ttl > 0 {
		deadline = ttl
	}
	s.notifier.Escalate(ctx, sent, notify.Spec{Notification: toNotification(n), After: m.GetEscalation().GetAfter().AsDuration(),
		Channels: m.GetEscalation().GetChannels(), Deadline: sent.Time.Add(deadline)})
}

// AddPushTarget implements PushService.AddPushTarget.
func (s *Service) AddPushTarget(ctx context.Context, req *pb.AddPushTargetRequest) (*pb.AddPushTargetResponse, error) {
	if s.notifier == nil {
		return nil, errNoNotifier
	}
	t, err := toTarget(req.GetTarget())
	if err != nil {
		return nil, err
	}
	if _, err := s.notifier.AddTarget(ctx, req.GetUserId(), t); err != nil {
		if errors.Is(err, notify.ErrEgress) {
			f, desc, _ := strings.Cut(err.Error(), ": ")
			if t.Channel == notify.ChannelWebhook {
				f = "webhook_url"
			}
			return nil, invalid("target."+f, desc)
		}
		if errors.Is(err, gateway.ErrTooManyTargets) {
			return nil, status.Errorf(codes.FailedPrecondition, "user has %d push targets, the most allowed (--notify-max-targets); remove one first", s.notifier.MaxTargets())
		}
		return nil, s.internal(ctx, "AddPushTarget", err)
	}
	return &pb.AddPushTargetResponse{Target: fromTarget(t)}, nil
}

// RemovePushTarget implements PushService.RemovePushTarget.
func (s *Service) RemovePushTarget(ctx context.Context, req *pb.RemovePushTargetRequest) (*pb.RemovePushTargetResponse, error) {
	if s.notifier == nil {
		return nil, errNoNotifier
	}
	ok, err := s.notifier.RemoveTarget(ctx, req.GetUserId(), req.GetTargetId())
	if err != nil {
		return nil, s.internal(ctx, "RemovePushTarget", err)
	}
	return &pb.RemovePushTargetResponse{Removed: ok}, nil
}

// ListPushTargets implements PushService.ListPushTargets.
func (s *Service) ListPushTargets(ctx context.Context, req *pb.ListPushTargetsRequest) (*pb.ListPushTargetsResponse, error) {
	if s.notifier == nil {
		return nil, errNoNotifier
	}
	ts, err := s.notifier.Targets(ctx, req.GetUserId())
	if err != nil {
		return nil, s.internal(ctx, "ListPushTargets", err)
	}
	out := &pb.ListPushTargetsResponse{Targets: make([]*pb.PushTarget, len(ts))}
	for i, t := range ts {
		out.Targets[i] = fromTarget(t)
	}
	return out, nil
}
