// Package codec keeps sysvm's workflow data out of Temporal in clear: a payload codec that
// encrypts every payload (inputs, results, heartbeat details, memos, and failure messages and
// stack traces) with AES-256-GCM before it leaves the process, and the codec HTTP endpoint the
// Temporal Web UI and CLI call to show histories decoded.
//
// The codec key is derived from the master key (SYSVM_SECRET_KEY) with HKDF-SHA256 under its
// own label, so the key that encrypts secrets at rest is never used for Temporal payloads. Each
// encrypted payload names the key that sealed it (metadata "encryption-key-id"), so a codec
// given the previous master keys as well still decodes histories written before a rotation.
// A payload without the encrypted encoding passes through Decode unchanged: histories
// recorded before the codec was turned on stay readable.
package codec

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"

	"go.temporal.io/api/common/v1"
	"go.temporal.io/api/proxy"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/protobuf/proto"
)

const (
	// EncodingEncrypted is the "encoding" metadata of an encrypted payload.
	EncodingEncrypted = "binary/encrypted"
	// MetadataKeyID is the metadata naming the key that sealed a payload.
	MetadataKeyID = "encryption-key-id"

	// keyInfo and idInfo label the HKDF outputs: the codec key and its public identifier.
	keyInfo = "sysvm temporal payload codec v1 key"
	idInfo  = "sysvm temporal payload codec v1 key id"
)

// ErrUnknownKey is returned when a payload was sealed under a key the codec does not hold.
var ErrUnknownKey = errors.New("payload encrypted under a key this codec does not hold")

// Codec is an AES-256-GCM converter.PayloadCodec. Build it with New; it is safe for
// concurrent use.
type Codec struct {
	current string
	keys    map[string]cipher.AEAD
}

var _ converter.PayloadCodec = (*Codec)(nil)

// New builds a codec that encrypts under a key derived from master (32 bytes, the decoded
// SYSVM_SECRET_KEY) and decrypts under that key and the keys derived from previous masters.
func New(master []byte, previous ...[]byte) (*Codec, error) {
	c := &Codec{keys: map[string]cipher.AEAD{}}
	for i, m := range append([][]byte{master}, previous...) {
		id, aead, err := derive(m)
		if err != nil {
			if i == 0 {
				return nil, fmt.Errorf("payload codec: master key: %w", err)
			}
			return nil, fmt.Errorf("payload codec: previous master key %d: %w", i, err)
		}
		if i == 0 {
			c.current = id
		}
		c.keys[id] = aead
	}
	return c, nil
}

// derive returns the codec key's identifier and cipher for a master key.
func derive(master []byte) (string, cipher.AEAD, error) {
	if len(master) != 32 {
		return "", nil, fmt.Errorf("want 32 bytes, got %d", len(master))
	}
	key, err := hkdf.Key(sha256.New, master, nil, keyInfo, 32)
	if err != nil {
		return "", nil, err
	}
	idBytes, err := hkdf.Key(sha256.New, master, nil, idInfo, 8)
	if err != nil {
		return "", nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return "", nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return "", nil, err
	}
	return "sysvm-" + hex.EncodeToString(idBytes), aead, nil
}

// KeyID is the identifier of the key new payloads are sealed under.
func (c *Codec) KeyID() string { return c.current }

// KeyIDs lists the identifiers of every key the codec decrypts with, sorted.
func (c *Codec) KeyIDs() []string {
	ids := make([]string, 0, len(c.keys))
	for id := range c.keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Encode seals each payload whole (metadata and data) into a new payload whose metadata says
// only that it is encrypted and under which key. The key ID is bound as additional data.
func (c *Codec) Encode(payloads []*common.Payload) ([]*common.Payload, error) {
	aead := c.keys[c.current]
	out := make([]*common.Payload, len(payloads))
	for i, p := range payloads {
		clear, err := proto.Marshal(p)
		if err != nil {
			return nil, fmt.Errorf("payload codec: marshal payload: %w", err)
		}
		nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(clear)+aead.Overhead())
		if _, err := rand.Read(nonce); err != nil {
			return nil, fmt.Errorf("payload codec: nonce: %w", err)
		}
		out[i] = &common.Payload{
			Metadata: map[string][]byte{
				converter.MetadataEncoding: []byte(EncodingEncrypted),
				MetadataKeyID:              []byte(c.current),
			},
			Data: aead.Seal(nonce, nonce, clear, []byte(c.current)),
		}
	}
	return out, nil
}

// Decode opens payloads Encode sealed; any other payload is returned as it is.
func (c *Codec) Decode(payloads []*common.Payload) ([]*common.Payload, error) {
	out := make([]*common.Payload, len(payloads))
	for i, p := range payloads {
		if string(p.GetMetadata()[converter.MetadataEncoding]) != EncodingEncrypted {
			out[i] = p
			continue
		}
		id := string(p.GetMetadata()[MetadataKeyID])
		aead, ok := c.keys[id]
		if !ok {
			return nil, fmt.Errorf("payload codec: %w: sealed under %q, this codec holds %v (is SYSVM_SECRET_KEY the key the workers use?)",
				ErrUnknownKey, id, c.KeyIDs())
		}
		data := p.GetData()
		if len(data) < aead.NonceSize()+aead.Overhead() {
			return nil, fmt.Errorf("payload codec: encrypted payload of %d bytes is too short", len(data))
		}
		n := aead.NonceSize()
		clear, err := aead.Open(nil, data[:n], data[n:], []byte(id))
		if err != nil {
			return nil, fmt.Errorf("payload codec: decrypt payload under key %q: %w", id, err)
		}
		var dec common.Payload
		if err := proto.Unmarshal(clear, &dec); err != nil {
			return nil, fmt.Errorf("payload codec: decrypted payload does not unmarshal: %w", err)
		}
		out[i] = &dec
	}
	return out, nil
}

// DataConverter is the SDK's default data converter with this codec applied.
func (c *Codec) DataConverter() converter.DataConverter {
	return converter.NewCodecDataConverter(converter.GetDefaultDataConverter(), c)
}

// FailureConverter moves a failure's message and stack trace into its encoded attributes, which
// the codec then encrypts: error texts leave the process encrypted too.
func (c *Codec) FailureConverter() converter.FailureConverter {
	return temporal.NewDefaultFailureConverter(temporal.DefaultFailureConverterOptions{
		DataConverter: c.DataConverter(), EncodeCommonAttributes: true})
}

// Apply sets the codec's data and failure converters on client options; every client and
// worker of sysvm dials with it.
func (c *Codec) Apply(o *client.Options) {
	o.DataConverter = c.DataConverter()
	o.FailureConverter = c.FailureConverter()
}

// DecodeMessage decodes, in place, every payload inside a Temporal API message (a history
// event, a whole history, a describe response), e.g. to read or record a raw history in clear.
func (c *Codec) DecodeMessage(ctx context.Context, msg proto.Message) error {
	return proxy.VisitPayloads(ctx, msg, proxy.VisitPayloadsOptions{
		SkipSearchAttributes: true,
		Visitor: func(_ *proxy.VisitPayloadsContext, p []*common.Payload) ([]*common.Payload, error) {
			return c.Decode(p)
		},
	})
}
