package service

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
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/internal/testinfra"
)

// These tests prove that the security settings of the configuration reach
// the wire: kfake and miniredis enforce SASL, TLS and passwords for real.

func securityConfig(brokers []string) *config.Config {
	cfg := &config.Config{Kafka: config.Kafka{Brokers: brokers}}
	cfg.SetDefaults()
	return cfg
}

func TestKafkaSASL(t *testing.T) {
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser(mech, "svc", "s3cret"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			for _, tc := range []struct {
				password string
				wantOK   bool
			}{{"s3cret", true}, {"wrong", false}} {
				cfg := securityConfig(c.ListenAddrs())
				cfg.Kafka.SASL = config.SASL{Mechanism: mech, Username: "svc", Password: config.SecretRef{Value: tc.password}}
				err := CreateTopics(ctx, cfg, 1, 1)
				if tc.wantOK && err != nil {
					t.Fatalf("right password: %v", err)
				}
				if !tc.wantOK && err == nil {
					t.Fatal("wrong password: topics were created")
				}
			}
			cfg := securityConfig(c.ListenAddrs())
			cfg.Kafka.SASL = config.SASL{Mechanism: mech, Username: "svc", Password: config.SecretRef{Value: "s3cret"}}
			if err := CheckTopics(ctx, cfg); err != nil {
				t.Fatalf("check after create: %v", err)
			}
		})
	}
}

// selfSigned writes a CA-less self-signed certificate for 127.0.0.1 and
// returns the server TLS config and the PEM file path clients trust.
func selfSigned(t *testing.T) (*tls.Config, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, path
}

func TestKafkaTLS(t *testing.T) {
	serverTLS, caFile := selfSigned(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(serverTLS))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	cfg := securityConfig(c.ListenAddrs())
	cfg.Kafka.TLS = config.TLS{Enabled: true, CAFile: caFile}
	if err := CreateTopics(ctx, cfg, 1, 1); err != nil {
		t.Fatalf("TLS with the right CA: %v", err)
	}
	untrusted := securityConfig(c.ListenAddrs())
	untrusted.Kafka.TLS = config.TLS{Enabled: true}
	shortCtx, cancelShort := context.WithTimeout(ctx, 5*time.Second)
	defer cancelShort()
	if err := CheckTopics(shortCtx, untrusted); err == nil {
		t.Fatal("TLS without trusting the server's certificate connected")
	}
}

func TestRedisTLSAndPassword(t *testing.T) {
	serverTLS, caFile := selfSigned(t)
	m := miniredis.NewMiniRedis()
	m.RequireAuth("s3cret")
	if err := m.StartTLS(serverTLS); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name     string
		password string
		tls      config.TLS
		wantOK   bool
	}{
		{"tls and password", "s3cret", config.TLS{Enabled: true, CAFile: caFile}, true},
		{"wrong password", "nope", config.TLS{Enabled: true, CAFile: caFile}, false},
		{"untrusted certificate", "s3cret", config.TLS{Enabled: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc, err := newRedis(config.Redis{Addrs: []string{m.Addr()}, Password: config.SecretRef{Value: tc.password}, TLS: tc.tls, PoolSize: 2})
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			err = rc.Ping(ctx).Err()
			if tc.wantOK != (err == nil) {
				t.Fatalf("ping: %v (want ok %v)", err, tc.wantOK)
			}
		})
	}
}

// selfSignedFiles is selfSigned with the key written too: the certificate
// and key files a real server loads, and the client TLS that trusts them.
func selfSignedFiles(t *testing.T) (certFile, keyFile string, client *tls.Config) {
	t.Helper()
	serverTLS, caFile := selfSigned(t)
	kb, err := x509.MarshalPKCS8PrivateKey(serverTLS.Certificates[0].PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	keyFile = filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pemBytes, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(pemBytes)
	return caFile, keyFile, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// TestRealRedisTLSAndACL: the same settings against a real redis-server
// serving TLS only, with an ACL user: the configuration's TLS, username and
// password reach a real server, and a wrong password or an untrusted
// certificate is refused by it.
func TestRealRedisTLSAndACL(t *testing.T) {
	certFile, keyFile, clientTLS := selfSignedFiles(t)
	addr := testinfra.PrivateRedisTLS(t, certFile, keyFile, clientTLS,
		"--user", "default", "off", "--user", "svc", "on", ">s3cret-pw", "~*", "&*", "+@all")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name, user, password string
		tls                  config.TLS
		wantOK               bool
	}{
		{"tls, user and password", "svc", "s3cret-pw", config.TLS{Enabled: true, CAFile: certFile}, true},
		{"wrong password", "svc", "nope", config.TLS{Enabled: true, CAFile: certFile}, false},
		{"no user (default is off)", "", "s3cret-pw", config.TLS{Enabled: true, CAFile: certFile}, false},
		{"untrusted certificate", "svc", "s3cret-pw", config.TLS{Enabled: true}, false},
		{"no TLS", "svc", "s3cret-pw", config.TLS{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc, err := newRedis(config.Redis{Addrs: []string{addr}, Username: tc.user, Password: config.SecretRef{Value: tc.password}, TLS: tc.tls, PoolSize: 2})
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
			defer pcancel()
			err = rc.Ping(pctx).Err()
			if tc.wantOK != (err == nil) {
				t.Fatalf("ping: %v (want ok %v)", err, tc.wantOK)
			}
			if tc.wantOK {
				// Scripts run as that user too: the store's first call.
				if err := rc.Set(pctx, "svc-check", "1", time.Minute).Err(); err != nil {
					t.Fatalf("write as svc: %v", err)
				}
			}
		})
	}
}

// TestRealKafkaSASLAndTLS: the SASL mechanisms and TLS of the configuration
// against a real broker's SASL_PLAINTEXT and SSL listeners (scripts/kafka.sh
// starts them, with a password drawn at each start and a self-signed
// certificate): the right credentials create and see topics, a wrong
// password or an untrusted certificate is refused by the broker.
func TestRealKafkaSASLAndTLS(t *testing.T) {
	saslBrokers, tlsBrokers := os.Getenv("KAFKA_SASL_BROKERS"), os.Getenv("KAFKA_TLS_BROKERS")
	if saslBrokers == "" || tlsBrokers == "" {
		t.Skip("KAFKA_SASL_BROKERS / KAFKA_TLS_BROKERS not set: no real broker with secured listeners (eval \"$(bash scripts/infra.sh up)\")")
	}
	pw, err := os.ReadFile(os.Getenv("KAFKA_SASL_PASSWORD_FILE"))
	if err != nil {
		t.Fatalf("KAFKA_SASL_PASSWORD_FILE: %v", err)
	}
	user, password := os.Getenv("KAFKA_SASL_USERNAME"), strings.TrimSpace(string(pw))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	uniqueTopics := func(cfg *config.Config) *config.Config {
		u := "sec-" + testinfra.Unique()
		cfg.Topics = config.Topics{Deposits: u + ".d", Revenue: u + ".r", Registrations: u + ".g", Qualifications: u + ".q",
			Dispatched: u + ".a", Confirmed: u + ".c", DLQ: u + ".x"}
		return cfg
	}
	for _, mech := range []string{config.SASLPlain, config.SASLScramSHA256, config.SASLScramSHA512} {
		t.Run("sasl "+mech, func(t *testing.T) {
			cfg := uniqueTopics(securityConfig(strings.Split(saslBrokers, ",")))
			cfg.Kafka.SASL = config.SASL{Mechanism: mech, Username: user, Password: config.SecretRef{Value: password}}
			if err := CreateTopics(ctx, cfg, 1, 1); err != nil {
				t.Fatalf("right password: %v", err)
			}
			if err := CheckTopics(ctx, cfg); err != nil {
				t.Fatalf("check after create: %v", err)
			}
			wrong := uniqueTopics(securityConfig(strings.Split(saslBrokers, ",")))
			wrong.Kafka.SASL = config.SASL{Mechanism: mech, Username: user, Password: config.SecretRef{Value: password + "x"}}
			if err := CreateTopics(ctx, wrong, 1, 1); err == nil {
				t.Fatal("wrong password: topics were created")
			}
			plain := uniqueTopics(securityConfig(strings.Split(saslBrokers, ",")))
			short, cancelShort := context.WithTimeout(ctx, 5*time.Second)
			defer cancelShort()
			if err := CheckTopics(short, plain); err == nil {
				t.Fatal("no SASL on a SASL listener: metadata was read")
			}
		})
	}
	t.Run("tls", func(t *testing.T) {
		cfg := uniqueTopics(securityConfig(strings.Split(tlsBrokers, ",")))
		cfg.Kafka.TLS = config.TLS{Enabled: true, CAFile: os.Getenv("KAFKA_TLS_CA_FILE")}
		if err := CreateTopics(ctx, cfg, 1, 1); err != nil {
			t.Fatalf("TLS trusting the broker's certificate: %v", err)
		}
		if err := CheckTopics(ctx, cfg); err != nil {
			t.Fatalf("check after create: %v", err)
		}
		untrusted := uniqueTopics(securityConfig(strings.Split(tlsBrokers, ",")))
		untrusted.Kafka.TLS = config.TLS{Enabled: true}
		short, cancelShort := context.WithTimeout(ctx, 5*time.Second)
		defer cancelShort()
		if err := CheckTopics(short, untrusted); err == nil {
			t.Fatal("TLS without trusting the broker's certificate connected")
		}
	})
}
