package main

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"pushgate/gateway/redisengine/redistest"
	pb "pushgate/gen/pushgate/v1"
)

// subscribe subscribes c to topic and waits for the reply.
func (e *envClient) subscribe(topic string) {
	e.t.Helper()
	e.send(map[string]any{"op": "subscribe", "topic": topic})
	if f := e.next(); f.Op != "subscribed" || f.Topic != topic {
		e.t.Fatalf("subscribe %s: %+v", topic, f)
	}
}

// expectData checks that the next message frame carries data (JSON).
func (e *envClient) expectData(data string) {
	e.t.Helper()
	if m := e.nextMessage(); string(m.Data) != data {
		e.t.Fatalf("%s got %s, want %s", e.hello.ConnID, m.Data, data)
	}
}

// "Everyone but the page that made the change": Publish and Broadcast with
// exclude_connection_ids skip that connection only, not its user's other
// tabs, on both engines.
func TestExcludeConnectionIDs(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	tabA := s.dialEnv(t, "/alice")
	tabB := s.dialEnv(t, "/alice")
	bob := s.dialEnv(t, "/bob")
	if tabA.hello.ConnID == tabB.hello.ConnID {
		t.Fatalf("two connections share the id %s", tabA.hello.ConnID)
	}
	for _, c := range []*envClient{tabA, tabB, bob} {
		c.subscribe("todo:7")
	}
	// The memory engine counts the connections it queued on; the Redis
	// engine counts from the nodes' totals (push.proto).
	want := func(exact, fromTotals int64) int64 {
		if testEngine == "redis" {
			return fromTotals
		}
		return exact
	}

	p, err := s.api.Publish(ctx, &pb.PublishRequest{Topic: "todo:7", Message: jsonMsg(`{"todo":"added"}`), ExcludeConnectionIds: []string{tabA.hello.ConnID}})
	if err != nil {
		t.Fatal(err)
	}
	if p.GetDeliveredConnections() != want(2, 3) {
		t.Fatalf("Publish delivered_connections = %d, want %d", p.GetDeliveredConnections(), want(2, 3))
	}
	b, err := s.api.Broadcast(ctx, &pb.BroadcastRequest{Message: jsonMsg(`{"all":1}`), ExcludeConnectionIds: []string{tabB.hello.ConnID, "c999999-NOSUCHNODE"}})
	if err != nil {
		t.Fatal(err)
	}
	if b.GetDeliveredConnections() != want(2, 3) {
		t.Fatalf("Broadcast delivered_connections = %d, want %d", b.GetDeliveredConnections(), want(2, 3))
	}
	// Both exclusion lists together: one user's whole set, one other tab.
	b, err = s.api.Broadcast(ctx, &pb.BroadcastRequest{Message: jsonMsg(`{"all":2}`), ExcludeUserIds: []string{"bob"}, ExcludeConnectionIds: []string{tabA.hello.ConnID}})
	if err != nil {
		t.Fatal(err)
	}
	if b.GetDeliveredConnections() != want(1, 2) {
		t.Fatalf("Broadcast with both lists delivered_connections = %d, want %d", b.GetDeliveredConnections(), want(1, 2))
	}
	if _, err := s.api.Broadcast(ctx, &pb.BroadcastRequest{Message: jsonMsg(`"end"`)}); err != nil {
		t.Fatal(err)
	}
	tabA.expectData(`{"all":1}`)
	tabA.expectData(`"end"`)
	tabB.expectData(`{"todo":"added"}`)
	tabB.expectData(`{"all":2}`)
	tabB.expectData(`"end"`)
	bob.expectData(`{"todo":"added"}`)
	bob.expectData(`{"all":1}`)
	bob.expectData(`"end"`)

	for _, tc := range []struct {
		ids   []string
		field string
	}{
		{[]string{""}, "exclude_connection_ids[0]"},
		{[]string{"c1-A", "c2\nc3"}, "exclude_connection_ids[1]"},
		{[]string{strings.Repeat("c", 65)}, "exclude_connection_ids[0]"},
	} {
		_, err := s.api.Publish(ctx, &pb.PublishRequest{Topic: "todo:7", Message: jsonMsg(`1`), ExcludeConnectionIds: tc.ids})
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), tc.field+":") {
			t.Errorf("Publish excluding %q: %v, want INVALID_ARGUMENT naming %s", tc.ids, err, tc.field)
		}
		_, err = s.api.Broadcast(ctx, &pb.BroadcastRequest{Message: jsonMsg(`1`), ExcludeConnectionIds: tc.ids})
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), tc.field+":") {
			t.Errorf("Broadcast excluding %q: %v, want INVALID_ARGUMENT naming %s", tc.ids, err, tc.field)
		}
	}
	_, err = s.api.Broadcast(ctx, &pb.BroadcastRequest{Message: jsonMsg(`1`), ExcludeConnectionIds: make([]string, 10001)})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), "exclude_connection_ids:") {
		t.Errorf("Broadcast excluding 10001 ids: %v, want INVALID_ARGUMENT naming exclude_connection_ids", err)
	}
}

// A connection id names one connection in the whole cluster: the first
// connection of each node has its own id, and excluding node A's skips
// only that one, whichever node the call goes to.
func TestClusterExcludeConnectionIDs(t *testing.T) {
	r := redistest.Start(t)
	n := startNodes(t, r, 2)
	ctx := context.Background()
	onA := n[0].dialEnv(t, "/alice")
	onB := n[1].dialEnv(t, "/alice")
	if onA.hello.ConnID == onB.hello.ConnID {
		t.Fatalf("the first connections of two nodes share the id %s", onA.hello.ConnID)
	}
	onA.subscribe("todo:9")
	onB.subscribe("todo:9")
	if _, err := n[1].api.Publish(ctx, &pb.PublishRequest{Topic: "todo:9", Message: jsonMsg(`1`), ExcludeConnectionIds: []string{onA.hello.ConnID}}); err != nil {
		t.Fatal(err)
	}
	if _, err := n[0].api.Broadcast(ctx, &pb.BroadcastRequest{Message: jsonMsg(`2`), ExcludeConnectionIds: []string{onB.hello.ConnID}}); err != nil {
		t.Fatal(err)
	}
	if _, err := n[1].api.Broadcast(ctx, &pb.BroadcastRequest{Message: jsonMsg(`3`)}); err != nil {
		t.Fatal(err)
	}
	onA.expectData(`2`)
	onA.expectData(`3`)
	onB.expectData(`1`)
	onB.expectData(`3`)
}
