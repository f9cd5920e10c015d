package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	pb "pushgate/gen/pushgate/v1"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	dir  string
}

func newCA(t *testing.T) *testCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pushgate test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	ca := &testCA{cert: cert, key: key, pool: pool, dir: t.TempDir()}
	os.WriteFile(filepath.Join(ca.dir, "ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	return ca
}

// issue signs a certificate for 127.0.0.1 (server) or a client, and writes
// it and its key as PEM files named name.pem and name-key.pem.
func (ca *testCA) issue(t *testing.T, name string, client bool) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	os.WriteFile(filepath.Join(ca.dir, name+".pem"), certPEM, 0o600)
	os.WriteFile(filepath.Join(ca.dir, name+"-key.pem"), keyPEM, 0o600)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

func (ca *testCA) file(name string) string { return filepath.Join(ca.dir, name) }

func TestTLSAndMutualTLS(t *testing.T) {
	ca := newCA(t)
	ca.issue(t, "server", false)
	clientCert := ca.issue(t, "orders-service", true)
	s := startServer(t,
		"--http-tls-cert", ca.file("server.pem"), "--http-tls-key", ca.file("server-key.pem"),
		"--grpc-tls-cert", ca.file("server.pem"), "--grpc-tls-key", ca.file("server-key.pem"),
		"--grpc-client-ca", ca.file("ca.pem"))
	ctx := context.Background()

	// wss:// with a client that trusts the test CA.
	httpc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool}}}
	c, _, err := websocket.Dial(ctx, "wss://"+s.app.HTTPAddr()+"/ws/merchant-42", &websocket.DialOptions{HTTPClient: httpc})
	if err != nil {
		t.Fatalf("wss: %v", err)
	}
	defer c.CloseNow()
	// Plain ws:// to the TLS port fails.
	if _, _, err := websocket.Dial(ctx, "ws://"+s.app.HTTPAddr()+"/ws/x", nil); err == nil {
		t.Fatal("plain ws:// accepted on the TLS listener")
	}

	// gRPC over mTLS with a client certificate.
	mtls := credentials.NewTLS(&tls.Config{RootCAs: ca.pool, Certificates: []tls.Certificate{clientCert}})
	cc, err := grpc.NewClient(s.app.GRPCAddr(), grpc.WithTransportCredentials(mtls))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	r, err := pb.NewPushServiceClient(cc).SendToUser(ctx, &pb.SendToUserRequest{UserId: "merchant-42", Message: jsonMsg(newOrder)})
	if err != nil || r.GetDeliveredConnections() != 1 {
		t.Fatalf("SendToUser over mTLS: %v, %v", r, err)
	}
	_, b, err := c.Read(ctx)
	if err != nil || string(b) != newOrder {
		t.Fatalf("wss client got %q, %v", b, err)
	}

	// A TLS client without a certificate is refused.
	noCert := credentials.NewTLS(&tls.Config{RootCAs: ca.pool})
	cc2, _ := grpc.NewClient(s.app.GRPCAddr(), grpc.WithTransportCredentials(noCert))
	defer cc2.Close()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := pb.NewPushServiceClient(cc2).GetPresence(cctx, &pb.GetPresenceRequest{UserIds: []string{"x"}}); err == nil {
		t.Fatal("gRPC call without a client certificate succeeded")
	} else if !strings.Contains(err.Error(), "certificate") && !strings.Contains(err.Error(), "tls") {
		t.Logf("refused with: %v", err)
	}
	// A client certificate from another CA is refused too.
	other := newCA(t)
	stranger := other.issue(t, "stranger", true)
	cc3, _ := grpc.NewClient(s.app.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.pool, Certificates: []tls.Certificate{stranger}})))
	defer cc3.Close()
	if _, err := pb.NewPushServiceClient(cc3).GetPresence(cctx, &pb.GetPresenceRequest{UserIds: []string{"x"}}); err == nil {
		t.Fatal("gRPC call with a certificate of another CA succeeded")
	}

	// The HTTP/JSON API cannot ask for a client certificate: with
	// --grpc-client-ca it is not served on the HTTP listener.
	req, _ := http.NewRequest(http.MethodPost, "https://"+s.app.HTTPAddr()+"/pushgate.v1.PushService/ListOnline", strings.NewReader(`{}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("HTTP/JSON API with --grpc-client-ca: status %d, want 404 (not served)", resp.StatusCode)
	}
}
