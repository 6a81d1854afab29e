/** Short toasts after an action succeeded (failures are shown inline, with their code). */
import { ElMessage } from 'element-plus'
import 'element-plus/es/components/message/style/css'

export const notify = {
  success: (message: string) => ElMessage({ type: 'success', message, grouping: true }),
  warning: (message: string) => ElMessage({ type: 'warning', message, grouping: true }),
}
