package controller_test

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	reflectpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// reflectClient calls unary methods knowing nothing but their names, the way
// grpcurl does: descriptors come from the server's reflection service and
// messages are built dynamically from JSON.
type reflectClient struct {
	conn  *grpc.ClientConn
	files *protoregistry.Files
}

func newReflectClient(ctx context.Context, conn *grpc.ClientConn) (*reflectClient, []string, error) {
	stream, err := reflectpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("open reflection stream: %w", err)
	}
	defer stream.CloseSend()
	ask := func(req *reflectpb.ServerReflectionRequest) (*reflectpb.ServerReflectionResponse, error) {
		if err := stream.Send(req); err != nil {
			return nil, err
		}
		return stream.Recv()
	}
	resp, err := ask(&reflectpb.ServerReflectionRequest{MessageRequest: &reflectpb.ServerReflectionRequest_ListServices{}})
	if err != nil {
		return nil, nil, fmt.Errorf("list services: %w", err)
	}
	var services []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		services = append(services, s.GetName())
	}
	// Fetch every file transitively, then build a registry.
	raw := map[string]*descriptorpb.FileDescriptorProto{}
	var fetch func(req *reflectpb.ServerReflectionRequest) error
	fetch = func(req *reflectpb.ServerReflectionRequest) error {
		resp, err := ask(req)
		if err != nil {
			return err
		}
		if e := resp.GetErrorResponse(); e != nil {
			return fmt.Errorf("reflection: %s", e.GetErrorMessage())
		}
		for _, b := range resp.GetFileDescriptorResponse().GetFileDescriptorProto() {
			fd := &descriptorpb.FileDescriptorProto{}
			if err := proto.Unmarshal(b, fd); err != nil {
				return err
			}
			if _, seen := raw[fd.GetName()]; seen {
				continue
			}
			raw[fd.GetName()] = fd
			for _, dep := range fd.GetDependency() {
				if _, seen := raw[dep]; !seen {
					if err := fetch(&reflectpb.ServerReflectionRequest{MessageRequest: &reflectpb.ServerReflectionRequest_FileByFilename{FileByFilename: dep}}); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	for _, s := range services {
		if err := fetch(&reflectpb.ServerReflectionRequest{MessageRequest: &reflectpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: s}}); err != nil {
			return nil, nil, fmt.Errorf("descriptors of %s: %w", s, err)
		}
	}
	set := &descriptorpb.FileDescriptorSet{}
	for _, fd := range raw {
		set.File = append(set.File, fd)
	}
	files, err := protodesc.NewFiles(set)
	if err != nil {
		return nil, nil, fmt.Errorf("build registry: %w", err)
	}
	return &reflectClient{conn: conn, files: files}, services, nil
}

// call invokes "pkg.Service/Method" with a JSON request and returns the
// JSON response.
func (c *reflectClient) call(ctx context.Context, method, reqJSON string) (string, error) {
	svc, m, ok := strings.Cut(method, "/")
	if !ok {
		return "", fmt.Errorf("method %q: want Service/Method", method)
	}
	d, err := c.files.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		return "", fmt.Errorf("service %s: %w", svc, err)
	}
	md := d.(protoreflect.ServiceDescriptor).Methods().ByName(protoreflect.Name(m))
	if md == nil {
		return "", fmt.Errorf("no method %s", method)
	}
	req := dynamicpb.NewMessage(md.Input())
	resolver := dynamicResolver{c.files}
	if err := (protojson.UnmarshalOptions{Resolver: resolver}).Unmarshal([]byte(reqJSON), req); err != nil {
		return "", fmt.Errorf("request JSON: %w", err)
	}
	resp := dynamicpb.NewMessage(md.Output())
	if err := c.conn.Invoke(ctx, "/"+svc+"/"+m, req, resp); err != nil {
		return "", err
	}
	out, err := (protojson.MarshalOptions{Resolver: resolver}).Marshal(resp)
	return string(out), err
}

// dynamicResolver resolves message types (for Any, FieldMask...) from the
// reflected files.
type dynamicResolver struct{ files *protoregistry.Files }

func (r dynamicResolver) FindMessageByName(name protoreflect.FullName) (protoreflect.MessageType, error) {
	if mt, err := protoregistry.GlobalTypes.FindMessageByName(name); err == nil {
		return mt, nil
	}
	d, err := r.files.FindDescriptorByName(name)
	if err != nil {
		return nil, err
	}
	return dynamicpb.NewMessageType(d.(protoreflect.MessageDescriptor)), nil
}

func (r dynamicResolver) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	name := url
	if i := strings.LastIndexByte(url, '/'); i >= 0 {
		name = url[i+1:]
	}
	return r.FindMessageByName(protoreflect.FullName(name))
}

func (r dynamicResolver) FindExtensionByName(protoreflect.FullName) (protoreflect.ExtensionType, error) {
	return nil, protoregistry.NotFound
}

func (r dynamicResolver) FindExtensionByNumber(protoreflect.FullName, protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	return nil, protoregistry.NotFound
}
