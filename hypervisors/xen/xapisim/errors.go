package xapisim

import (
	"fmt"
	"strings"
)

// Error codes XAPI returns as the first element of ErrorDescription, as spelled in
// xen-api's Api_errors. The simulator returns them with the same parameters as XAPI does.
const (
	CodeSessionAuthenticationFailed   = "SESSION_AUTHENTICATION_FAILED"
	CodeSessionInvalid                = "SESSION_INVALID"
	CodeHandleInvalid                 = "HANDLE_INVALID"
	CodeUUIDInvalid                   = "UUID_INVALID"
	CodeVMBadPowerState               = "VM_BAD_POWER_STATE"
	CodeVMIsTemplate                  = "VM_IS_TEMPLATE"
	CodeMessageMethodUnknown          = "MESSAGE_METHOD_UNKNOWN"
	CodeMessageParameterCountMismatch = "MESSAGE_PARAMETER_COUNT_MISMATCH"
	CodeOperationNotAllowed           = "OPERATION_NOT_ALLOWED"
	CodeOtherOperationInProgress      = "OTHER_OPERATION_IN_PROGRESS"
	CodeFieldTypeError                = "FIELD_TYPE_ERROR"
	CodeValueNotSupported             = "VALUE_NOT_SUPPORTED"
	CodeMemoryConstraintViolation     = "MEMORY_CONSTRAINT_VIOLATION"
	CodeHostNotEnoughFreeMemory       = "HOST_NOT_ENOUGH_FREE_MEMORY"
	CodeHostOffline                   = "HOST_OFFLINE"
	CodeNoHostsAvailable              = "NO_HOSTS_AVAILABLE"
	CodeSRFull                        = "SR_FULL"
	CodeVDIInUse                      = "VDI_IN_USE"
	CodeDeviceAlreadyExists           = "DEVICE_ALREADY_EXISTS"
	CodeDeviceAlreadyAttached         = "DEVICE_ALREADY_ATTACHED"
	CodeMACInvalid                    = "MAC_INVALID"
	CodeMapDuplicateKey               = "MAP_DUPLICATE_KEY"
	CodeInternalError                 = "INTERNAL_ERROR"
	CodeTooBusy                       = "TOO_BUSY"
	CodeTaskCancelled                 = "TASK_CANCELLED"
)

// Failure is an XAPI error: the ErrorDescription list, code first, then its parameters.
// On XML-RPC it travels as {"Status":"Failure","ErrorDescription":[code, params...]}; on
// JSON-RPC v2 as {"error":{"code":1,"message":code,"data":[params...]}}.
type Failure struct {
	Code   string
	Params []string
}

// Error renders the failure the way XAPI's CLI does: CODE(param1, param2).
func (f *Failure) Error() string {
	return fmt.Sprintf("%s(%s)", f.Code, strings.Join(f.Params, ", "))
}

// Description is the ErrorDescription list.
func (f *Failure) Description() []string {
	return append([]string{f.Code}, f.Params...)
}

func fail(code string, params ...string) *Failure {
	if params == nil {
		params = []string{}
	}
	return &Failure{Code: code, Params: params}
}

func handleInvalid(class, ref string) *Failure { return fail(CodeHandleInvalid, class, ref) }

// badPowerState is VM_BAD_POWER_STATE [vm, expected, actual] with lower-case states, as XAPI
// renders them (Record_util.vm_power_state_to_lowercase_string).
func badPowerState(vm, expected, actual string) *Failure {
	return fail(CodeVMBadPowerState, vm, strings.ToLower(expected), strings.ToLower(actual))
}
